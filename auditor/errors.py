"""One exception type for run-level faults: the CLI turns it into exit code 2 and one clear paragraph."""

import errno


class AuditorError(Exception):
    """A fault in the user's config, model or data that they can fix; the message names the fix."""


class ConfigError(AuditorError):
    """An unknown key, a value of the wrong type, or a contradictory combination of settings."""


def first_line(err: BaseException) -> str:
    """An exception as one line, "Type: message": library messages can span many lines, a paragraph cannot."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def os_error_text(err: OSError) -> str:
    """An OSError as "No space left on device (ENOSPC) at /path": what went wrong and where, in one line."""
    name = errno.errorcode.get(err.errno or 0, "")
    where = " and ".join(str(p) for p in (err.filename, err.filename2) if p)
    return f"{err.strerror or err}{f' ({name})' if name else ''}{f' at {where}' if where else ''}"
