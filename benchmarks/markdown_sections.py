"""Generated sections of markdown files: a benchmark writes its table between `<!-- NAME:begin -->` and
`<!-- NAME:end -->`, so README figures always come from a script's output and are never hand-edited."""

from __future__ import annotations

import re
from pathlib import Path


def replace_section(path: str | Path, name: str, text: str) -> None:
    """Replace what lies between the section's markers in `path` with `text` (markers appended at the end of the
    file when absent; the file is created when missing)."""
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    current = path.read_text() if path.is_file() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), flags=re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current, count=1)
    else:
        updated = current.rstrip("\n") + ("\n\n" if current.strip() else "") + block + "\n"
    path.write_text(updated)
