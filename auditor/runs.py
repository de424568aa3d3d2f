"""The run directory: the snapshot every stage after the sweep reads, so reports re-render without the model.

Layout of RUN_DIR:
  records.parquet      one row per audited image (columns: RECORD_COLUMNS, plus per-method extras and the
                       predicted-class map's CAM box cam_box_x0 .. cam_box_y1, auditor.localisation; the image
                       properties prop_<name>, from the thumbs and the decoded size, auditor.properties)
  maps.npy             float16 [N, 2, S, S]: [:, 0] predicted-class map, [:, 1] true-class map of the primary
                       CAM method, each divided by its own maximum (raw maximum in records.{pred,true}_cam_max);
                       row i belongs to the record whose `row` == i
  maps_<method>.npy    the same for every further method in sweep.methods
  maps_counterfactual_cells.npy  float16 [N, 2, h, w]: counterfactual Grad-CAM at the target layer's resolution,
                       each scaled to 1, from the sweep's gradients; auditor.evidence draws counterfactual.npz from it
  masks.npy            float16 [N, S, S]: share of each cell covered by the object mask (zeros where no mask)
  probs.npy            float16 [N, C]: the full softmax probability vector of every image (row = records.row)
  thumbs.npy           uint8 [N, C, s, s]: the pixels the model saw, area-pooled to sweep.keep_images_px, so the
                       checks after the sweep (the repeated-mark search) need not decode every file again
  features.npy         float16 [N, D]: the target layer's activations averaged over its cells, L2-normalised (D = C,
                       or a fixed seeded random projection to 256 dims above that): the near-duplicate search
                       (auditor.duplicates); absent where sweep.keep_features is false
  skipped.csv          id, path, reason: inputs that could not be audited
  confusion.csv        K x K counts, index = true class, columns = predicted class
  per_class.csv        class, support, precision, recall, f1, attention means and localisation metrics per class
  confused_pairs.json  [{true, pred, count, rate, ids}] ranked by count, then rate
  summary.json         headline figures for people and dashboards
  manifest.json        config, package versions, device, fingerprints of model and data, timings
  findings.json        bias findings (see auditor.findings)
  label_errors.csv     every suspected label error, in the order to check them (see auditor.findings)
  causal.csv           the causal check: accuracy with the object / the flagged region erased (auditor.causal)
  counterfactual.npz   ids [M] and float16 maps [M, 2, S, S]: counterfactual Grad-CAM of the findings'
                       evidence images (auditor.evidence)
  batch_norm.json      the model-health check with batch statistics (auditor.batch_norm_check)
  accepted_findings.json  which findings run.baseline accepts (auditor.baseline)
  report.html          the self-contained report
  diff/                `auditor diff`'s diff.html and diff.json, by default into the later run
  shown_images/        the Python API's in-memory images that the report shows, as PNG (auditor.api)
  shards/              per-shard records and maps written atomically during the sweep (resume)
  audit.log            the run's log lines (JSON)
  .auditor-run.json    the marker that this folder is a run folder; .auditor-run.lock, the one-writer lock

auditor.outdir.OUTPUTS lists these names: the audit writes, replaces and deletes nothing else (see there).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from auditor.config import Config, config_from_dict
from auditor.errors import AuditorError
from auditor.metrics import MAP_KINDS, record_columns  # noqa: F401 - MAP_KINDS re-exported for the sweep

# Per-image arrays the sweep writes beside the records: streamed shard by shard into float16 <name>.npy files.
ARRAY_FIELDS = ("maps", "masks", "probs", "thumbs", "features")
RECORD_COLUMNS = (
    "row", "id", "path", "label", "label_idx", "pred", "pred_idx",
    "p_true", "p_pred", "margin", "loss", "correct", "has_mask", *record_columns(),
)  # fmt: skip


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator:
    """A file handle whose contents appear at `path` only when the block ends without error.

    A crash leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".tmp-{path.name}.", delete=False) as tmp:
        try:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException as err:
            with contextlib.suppress(OSError):  # a full disk fails the close's flush too: remove the file anyway
                tmp.close()
            os.unlink(tmp.name)
            if isinstance(err, OSError) and err.errno and not err.filename:  # say which file could not be written
                raise OSError(err.errno, err.strerror, str(path)) from err
            raise
    os.replace(tmp.name, path)


def write_atomic(path: Path, data: bytes | str) -> None:
    with atomic_file(path, "w" if isinstance(data, str) else "wb") as handle:
        handle.write(data)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n")


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def clean_floats(obj):
    """Replace NaN and infinities by None so the JSON is strict and dashboards can read it."""
    if isinstance(obj, dict):
        return {k: clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_floats(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as handle:
        np.save(handle, array)


def save_parquet_atomic(path: Path, frame: pd.DataFrame) -> None:
    with atomic_file(path) as handle:
        frame.to_parquet(handle, index=False)


COUNTERFACTUAL_FILE = "counterfactual.npz"


@dataclass
class Run:
    """A finished run directory, loaded for findings, reports and diffs."""

    path: Path
    records: pd.DataFrame
    maps: np.ndarray  # float16 [N, 2, S, S]
    masks: np.ndarray  # float16 [N, S, S]
    classes: list[str]
    summary: dict
    manifest: dict
    skipped: pd.DataFrame
    probs: np.ndarray | None = None  # float16 [N, C] softmax per image; None for run dirs written before probs.npy
    thumbs: np.ndarray | None = None  # uint8 [N, C, s, s] model-input pixels; None where sweep.keep_images_px was 0
    features: np.ndarray | None = None  # float16 [N, D] pooled target-layer features; None where not kept

    @property
    def config(self) -> Config:
        return config_from_dict(self.manifest["config"])

    def method_maps(self, method: str) -> np.ndarray:
        """Maps of a further CAM method (the primary method's are `maps`)."""
        if method == self.manifest.get("methods", ["gradcam"])[0]:
            return self.maps
        return np.load(self.path / f"maps_{method}.npy", mmap_mode="r")

    def counterfactual_maps(self) -> dict[str, np.ndarray]:
        """Sample id -> counterfactual maps [2, S, S] (predicted, true class), for the images that have them:
        the findings' evidence (counterfactual.npz), or every image when the sweep computed the method."""
        path = self.path / COUNTERFACTUAL_FILE
        if path.is_file():
            with np.load(path, allow_pickle=False) as stored:
                return dict(zip((str(i) for i in stored["ids"]), stored["maps"]))
        if (self.path / "maps_counterfactual.npy").is_file():
            every = self.method_maps("counterfactual")
            return {str(i): every[int(row)] for i, row in zip(self.records["id"], self.records["row"])}
        return {}

    def findings(self) -> list[dict]:
        path = self.path / "findings.json"
        return json.loads(path.read_text())["findings"] if path.is_file() else []


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory written by the sweep; memory-maps the arrays."""
    run_dir = Path(run_dir)
    needed = ["records.parquet", "maps.npy", "masks.npy", "summary.json", "manifest.json"]
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing:
        raise AuditorError(
            f"{run_dir} is not a finished run directory (missing {', '.join(missing)}). "
            "Run `auditor audit` first, or point at the folder it wrote."
        )
    manifest = json.loads((run_dir / "manifest.json").read_text())
    skipped_path = run_dir / "skipped.csv"
    skipped = pd.read_csv(skipped_path, dtype=str) if skipped_path.is_file() else pd.DataFrame(
        columns=["id", "path", "reason"]
    )
    probs_path = run_dir / "probs.npy"
    return Run(
        path=run_dir,
        records=pd.read_parquet(run_dir / "records.parquet"),
        maps=np.load(run_dir / "maps.npy", mmap_mode="r"),
        masks=np.load(run_dir / "masks.npy", mmap_mode="r"),
        classes=list(manifest["classes"]),
        summary=json.loads((run_dir / "summary.json").read_text()),
        manifest=manifest,
        skipped=skipped,
        probs=np.load(probs_path, mmap_mode="r") if probs_path.is_file() else None,
        thumbs=np.load(run_dir / "thumbs.npy", mmap_mode="r") if (run_dir / "thumbs.npy").is_file() else None,
        features=np.load(run_dir / "features.npy", mmap_mode="r") if (run_dir / "features.npy").is_file() else None,
    )


SHARD_DIR = "shards"
SHARD_STAMP = "fingerprint.json"  # the run key the shards were computed under: present before any shard is written
# The only names a ShardWriter writes into SHARD_DIR, and so the only ones it deletes (with their atomic_file
# temporaries): a file of another name there, or a shard name without the stamp, is not the audit's.
_SHARD_NAME = re.compile(r"\d{9}-\d{9}\.npz")
_SHARD_TEMPORARY = re.compile(r"\.tmp-(\d{9}-\d{9}\.npz|fingerprint\.json)\..+")


def shard_paths(run_dir: Path) -> list[Path]:
    """The finished shards of RUN_DIR in index order (none where shards/ has no stamp of ours)."""
    folder = Path(run_dir) / SHARD_DIR
    if not (folder / SHARD_STAMP).is_file():
        return []
    return sorted(path for path in folder.iterdir() if _SHARD_NAME.fullmatch(path.name))


class ShardWriter:
    """Writes the sweep's per-image results in shards, each one file written atomically.

    A shard covers a contiguous range of sample indices [start, stop). A run killed at any point leaves only
    whole shards behind, so the same command resumes after the last one (when the fingerprint matches).
    """

    def __init__(self, run_dir: Path, fingerprint: str, resume: bool = True):
        self.dir = Path(run_dir) / SHARD_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stamp = self.dir / SHARD_STAMP
        if not self.stamp.is_file() and any(_SHARD_NAME.fullmatch(p.name) for p in self.dir.iterdir()):
            raise AuditorError(
                f"{self.dir} holds shard files that no {SHARD_STAMP} says an audit wrote: the audit will not replace "
                "or delete them. Move them away, or choose another --out."
            )
        self._remove_temporaries()  # half-written by a killed run
        previous = json.loads(self.stamp.read_text()).get("fingerprint") if self.stamp.is_file() else None
        if previous != fingerprint or not resume:
            for old in self.shards():
                old.unlink()
            write_json(self.stamp, {"fingerprint": fingerprint})
        self.pending: list[dict] = []

    def shards(self) -> list[Path]:
        return shard_paths(self.dir.parent)

    def remove(self) -> None:
        """Delete the merged shards: ours only. The folder goes too unless something else is left in it."""
        for path in [*self.shards(), self.stamp]:
            path.unlink(missing_ok=True)
        self._remove_temporaries()
        with contextlib.suppress(OSError):  # not empty: someone else's files stay, and so does the folder
            self.dir.rmdir()

    def _remove_temporaries(self) -> None:
        for path in self.dir.iterdir():
            if _SHARD_TEMPORARY.fullmatch(path.name):
                path.unlink(missing_ok=True)

    def done_until(self, first: int = 0) -> int:
        """The first sample index not covered by a contiguous run of finished shards from `first`."""
        stop = first
        for path in self.shards():
            start, end = (int(part) for part in path.stem.split("-"))
            if end <= first:
                continue
            if start != stop:
                break
            stop = end
        return stop

    def add(self, batch: dict[str, np.ndarray]) -> None:
        self.pending.append(batch)

    def flush(self, start: int, stop: int) -> None:
        """Write every pending batch as the shard [start, stop)."""
        if not self.pending:
            return
        merged = _concat_by_key(self.pending)
        with atomic_file(self.dir / f"{start:09d}-{stop:09d}.npz") as handle:
            np.savez(handle, **merged)
        self.pending = []


def read_shards(paths: list[Path]) -> tuple[dict[str, np.ndarray], int]:
    """Concatenate the scalar arrays of shards (not the ARRAY_FIELDS); returns them and the number of audited rows."""
    parts = []
    for path in paths:
        with np.load(path) as shard:
            parts.append({key: shard[key] for key in shard.files if not key.startswith(ARRAY_FIELDS)})
    merged = _concat_by_key(parts)
    return merged, int(len(merged.get("index", [])))


def _concat_by_key(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate each key over the parts that have it: a part where every image failed has no metric keys."""
    keys = dict.fromkeys(key for part in parts for key in part)
    return {key: np.concatenate([part[key] for part in parts if key in part]) for key in keys}


def reserve_blocks(path: Path) -> None:
    """Allocate a memory-mapped file's disk blocks up front: a full disk is then an OSError here, not a SIGBUS
    that kills the process at the first write into the map."""
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise OSError(err.errno, err.strerror, str(path)) from None
        # other errors: a filesystem without fallocate; the writes will allocate


def merge_shard_arrays(paths: list[Path], run_dir: Path, rows: int) -> list[str]:
    """Stream every shard's ARRAY_FIELDS (maps, masks, probs, thumbs, features) into memory-mapped .npy files of
    the shards' dtype (float16; uint8 for thumbs): memory stays bounded by one shard."""
    shapes, dtypes = {}, {}
    for path in paths:  # each key's shape and dtype from the first shard that has it: reading an array reads it all
        with np.load(path) as shard:
            for key in shard.files:
                if key.startswith(ARRAY_FIELDS) and key not in shapes:
                    array = shard[key]
                    shapes[key], dtypes[key] = array.shape[1:], array.dtype
    names = list(shapes)
    outputs = {}
    for key in names:
        tmp = run_dir / f".{key}.npy.tmp"
        outputs[key] = (tmp, np.lib.format.open_memmap(tmp, mode="w+", dtype=dtypes[key], shape=(rows, *shapes[key])))
        reserve_blocks(tmp)
    offset = 0
    for path in paths:
        with np.load(path) as shard:
            count = len(shard["index"])
            for key in names:
                if count:
                    outputs[key][1][offset: offset + count] = shard[key]
        offset += count
    for key, (tmp, array) in outputs.items():
        array.flush()
        del array
        os.replace(tmp, run_dir / f"{key}.npy")
    return names
