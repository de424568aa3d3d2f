"""The output folder: which files are the audit's, and one writer at a time.

An audit never deletes or replaces a file it did not write. It writes only the names in OUTPUTS, into a folder
it has claimed: one that holds its marker (MARKER, written on the first audit into it), or an earlier version's
run directory, or one where none of those names exist yet (other files there are left untouched beside the
run). A folder that holds such a name without a marker is refused, as is a folder inside the data, where the
audit's files would be read as data. While an audit runs it holds an exclusive lock (flock) on LOCK, which the
kernel releases on any exit, SIGKILL included: a second audit into the same folder is refused and names the
first, and a crashed run leaves no stale lock, so the same command resumes.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from auditor import __version__
from auditor.config import DataConfig
from auditor.errors import AuditorError, os_error_text
from auditor.runs import ARRAY_FIELDS, COUNTERFACTUAL_FILE, SHARD_DIR, shard_paths, write_json

try:
    import fcntl
except ImportError:  # not POSIX: no lock, the rest holds
    fcntl = None

log = logging.getLogger("auditor")

MARKER = ".auditor-run.json"  # who wrote this run folder, and when: the proof that its OUTPUTS are ours
LOCK = ".auditor-run.lock"  # flock'ed for the whole audit; holds the running audit's pid and start time

# Everything an audit (and `auditor report` / `auditor diff` into it) writes at the top of its run folder, as
# fnmatch patterns; a trailing "/" marks a folder. Ownership is checked against this list.
OUTPUTS = (
    MARKER, LOCK, "audit.log",
    "records.parquet", *(f"{name}*.npy" for name in ARRAY_FIELDS),  # maps.npy, maps_<method>.npy, thumbs.npy, ...
    "skipped.csv", "confusion.csv", "per_class.csv", "confused_pairs.json", "summary.json", "manifest.json",
    "findings.json", "label_errors.csv", "causal.csv", COUNTERFACTUAL_FILE, "batch_norm.json",
    "accepted_findings.json", "report.html", "shown_images/",  # shown_images: auditor.api's in-memory images
    f"{SHARD_DIR}/", "diff/",
    ".tmp-*", ".*.npy.tmp",  # half-written files (runs.atomic_file, merge_shard_arrays)
)
_TEMPORARY = (".tmp-*", ".*.npy.tmp")

_HELD: set[Path] = set()  # folders this process has claimed: a nested claim (run_audit inside the CLI) passes


def is_output(name: str) -> bool:
    """Whether a top-level name in a run folder is one the audit writes."""
    return any(fnmatch.fnmatchcase(name, pattern.rstrip("/")) for pattern in OUTPUTS)


@contextlib.contextmanager
def claimed(out_dir: str | Path, data: DataConfig | None = None) -> Iterator[Path | None]:
    """Hold the run folder for the block: checked to be ours (or free of our names), locked, marked. Yields the
    folder, or None in a torchrun rank > 0: rank 0 holds the folder, and the other ranks write only their shards
    into it (after rank 0 has claimed it), not even audit.log.

    An OSError inside the block (disk full, permissions, a path under a file) becomes an AuditorError that names
    the path, what the folder holds so far and how to resume.
    """
    out = Path(out_dir)
    if int(os.environ.get("RANK", "0") or 0) > 0:
        yield None
        return
    if out.resolve() in _HELD:  # run_audit inside the CLI's claim
        yield out
        return
    _refuse_data_folder(out, data or DataConfig())
    try:
        if out.exists() and not out.is_dir():
            raise AuditorError(f"--out {out} is a file, not a folder. Give --out a folder (new or empty) for the run.")
        out.mkdir(parents=True, exist_ok=True)
        _refuse_foreign_names(out)
        lock = _lock(out)
    except OSError as err:
        raise AuditorError(f"Cannot create or lock the run folder {out}: {os_error_text(err)}. Choose another --out, "
                           "or fix the folder's permissions.") from None
    key = out.resolve()
    _HELD.add(key)
    try:
        _refuse_foreign_names(out)  # again, now that no other audit can write here
        _mark(out)
        yield out
    except OSError as err:
        raise AuditorError(write_failure(out, err)) from err
    finally:
        _HELD.discard(key)
        if lock is not None:
            os.close(lock)  # releases the flock


def _refuse_data_folder(out: Path, data: DataConfig) -> None:
    """--out equal to or inside data.root or data.masks (or equal to the manifest's folder) is refused: the next
    scan would read the run's files as data, and a class named like an output folder would mix with it."""
    target = out.resolve()
    folders = [("data.root", data.root), ("data.masks", data.masks)]
    for key, folder in folders:
        if folder and (target == Path(folder).resolve() or Path(folder).resolve() in target.parents):
            raise AuditorError(
                f"--out {out} is {'the' if target == Path(folder).resolve() else 'inside the'} data folder {key} "
                f"{folder}: the audit's files would be mixed with the data (and read as data by the next audit). "
                f"Choose a folder outside it, e.g. {Path(folder).resolve().parent / 'audit-run'}."
            )
    if data.manifest and target == Path(data.manifest).resolve().parent:
        raise AuditorError(
            f"--out {out} is the folder of data.manifest {data.manifest}, whose paths resolve there: the audit's "
            "files would be mixed with the data. Choose a subfolder or another folder for the run."
        )


def _ours(out: Path) -> bool:
    """Whether the folder is a run folder: our marker, or an earlier version's manifest or shard fingerprint."""
    if (out / MARKER).is_file():
        return True
    for name, key in (("manifest.json", "run_key"), (f"{SHARD_DIR}/fingerprint.json", "fingerprint")):
        try:
            if key in json.loads((out / name).read_text(encoding="utf-8")):
                return True
        except (OSError, ValueError, TypeError):
            continue
    return False


def _refuse_foreign_names(out: Path) -> None:
    """A folder not marked as ours may hold anything but the names the audit writes."""
    if _ours(out):
        return
    taken = sorted(name for name in os.listdir(out) if is_output(name) and name != LOCK)  # LOCK: only ever ours
    if taken:
        raise AuditorError(
            f"--out {out} already holds {', '.join(taken[:6])}{' ...' if len(taken) > 6 else ''}, which the audit "
            f"writes, and no {MARKER} says an audit wrote them. The audit never replaces or deletes files it did "
            "not write: move them away, or choose a new or empty folder for --out."
        )


def _lock(out: Path) -> int | None:
    """An open descriptor holding an exclusive flock on out/LOCK, or an AuditorError naming the audit that holds
    it. Where the filesystem has no locks the audit runs unlocked, with a warning (None: no fcntl at all)."""
    if fcntl is None:
        return None
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(os.pread(fd, 4096, 0))
        os.close(fd)
        raise AuditorError(
            f"Another audit is writing to {out} ({holder}). Two audits into one folder would mix their results: "
            "wait for it to finish, or choose another --out."
        ) from None
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            os.close(fd)
            raise
        log.warning("cannot lock %s (%s): make sure no other audit writes to this folder", out, err.strerror)
        return fd
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "command": sys.argv}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info, default=str) + "\n").encode(), 0)
    return fd


def _holder(raw: bytes) -> str:
    """The lock file's contents as words: which process holds the folder, since when."""
    try:
        info = json.loads(raw.decode())
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "it has only just started"


def _mark(out: Path) -> None:
    """Write the marker on the first audit into the folder; remove what a killed run left half-written."""
    if not (out / MARKER).is_file():
        write_json(out / MARKER, {"tool": "auditor", "version": __version__, "created": _now(),
                                  "host": socket.gethostname(), "pid": os.getpid()})
    for name in os.listdir(out):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in _TEMPORARY):
            (out / name).unlink(missing_ok=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_FIXES = {
    errno.ENOSPC: "Free some disk space (or choose an --out on a disk with room)",
    errno.EDQUOT: "Free some of your disk quota (or choose an --out on another disk)",
    errno.EACCES: "Give this user write access there (or choose another --out)",
    errno.EPERM: "Give this user write access there (or choose another --out)",
    errno.EROFS: "Choose an --out on a writable disk",
    errno.ENOTDIR: "A path on the way is a file, not a folder: choose another --out",
    errno.EEXIST: "A file stands where a folder must go: choose another --out",
}


def write_failure(out: Path, err: OSError) -> str:
    """The paragraph for an OSError during the audit: what failed where, what the run folder holds, how to go on."""
    shards = shard_paths(out)
    resume = (f"it resumes after the {len(shards)} finished shard(s)" if shards else "it starts over")
    return (f"The audit stopped on an error of the operating system: {os_error_text(err)}. The run folder {out} holds "
            f"{_contents(out)}. {_FIXES.get(err.errno, 'Fix the cause')}, then run the same command again: "
            f"{resume}.")


def _contents(out: Path) -> str:
    """What the audit has written into `out` so far, as words."""
    try:
        names = sorted(name for name in os.listdir(out) if is_output(name) and name not in (MARKER, LOCK))
    except OSError:
        return "what could not be listed"
    shown = [f"{name}/ ({len(shard_paths(out))} finished shards)" if name == SHARD_DIR else name for name in names
             if not any(fnmatch.fnmatchcase(name, pattern) for pattern in _TEMPORARY)]
    return ", ".join(shown) if shown else "nothing of this run yet"
