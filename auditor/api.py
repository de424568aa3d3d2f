"""The Python API: audit a model and a dataset held in memory (a notebook, a training script) through the pipeline
the CLI runs, and read run directories back as objects.

    run = auditor.audit(model, dataset, classes=["cat", "dog"], out="reports/run")
    run.findings, run.findings_frame(), run.records, run.label_errors, run.report()

What comes in is turned into what `auditor.pipeline.run_audit` takes (a LoadedModel, and an AuditDataset built by
`InMemoryDataset`); from there on there is one implementation, the CLI's.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import html
import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from torchvision import tv_tensors

from auditor.pipeline import run_audit
from auditor.baseline import accepted_findings, read_findings
from auditor.cams import preserved_model_state
from auditor.config import Config, DataConfig, ReportConfig, config_from_dict, load_config
from auditor.data import AuditDataset, Sample, plain_image, positions
from auditor.errors import AuditorError, ConfigError
from auditor.findings.record import SEVERITIES, Finding
from auditor.findings.suspected_label_error import LABEL_ERROR_COLUMNS
from auditor.models import ROUTES, LoadedModel
from auditor.outdir import claimed
from auditor.runs import load_run

log = logging.getLogger("auditor")

EXPECTED = (
    "auditor.audit reads dataset[i] as (image, label) or as a dict with \"image\", \"label\" and optionally \"mask\" "
    "and \"id\": the image a [C, H, W] tensor (uint8 pixels, preprocessed as image files are; floating point, taken "
    "as the model's input as it is) or a PIL image, the label a class index 0 to K - 1 (K = len(classes)), the mask "
    "an [H, W] tensor, array or PIL image, nonzero on the object."
)
SHOWN_IMAGES = "shown_images"  # RUN_DIR/shown_images/: the in-memory images the report shows, as PNG
TOP_FINDINGS = 5  # findings listed in a notebook's inline display


def audit(model: nn.Module | dict | str | Path | None, dataset: Dataset | str | Path | None,
          classes: Sequence[str] | None = None, masks=None, out: str | Path | None = None,
          config: Config | dict | str | Path | None = None, **overrides) -> Run | None:
    """Audit `model` on `dataset` and return the finished Run (None on a torchrun rank other than 0).

    model: any nn.Module (its target layer found as for any route, or named by model.target_layer); a dict of the
        config's model section ({"arch": "resnet18", "checkpoint": ...}, {"timm": ...}); or a path: a Hugging Face
        save_pretrained folder, a torch.export .pt2 program, else a TorchScript file. None: the config's model.
        The caller's model is left as it was: modes, requires_grad, hooks, devices and memory format.
    dataset: a torch Dataset (see EXPECTED); or the path of an ImageFolder tree (a .csv or .parquet path: a
        manifest). None: the config's data. Floating-point images are taken as normalised by data.mean and data.std
        (ImageNet's unless set), which the run's stored pixels undo; uint8 images and PIL images go through
        data.resize, data.crop, data.mean and data.std exactly as decoded image files do.
    classes: class names in logit order; default: the config's, the dataset's `classes` attribute, the folder
        names, else "0" ... "K-1" from the model's outputs.
    masks: for a path dataset, a folder of masks mirroring it (data.masks); for a torch Dataset, a sequence with one
        mask (or None) per item, for items that carry none of their own.
    out: the run directory (run.out_dir). config: a YAML path, a dict of sections or a Config; any setting can
        also be given as section__key=value, e.g. sweep__batch_size=64, findings__causal="all".
    """
    raw = _raw_config(config)
    for key, value in overrides.items():
        section, sep, name = key.partition("__")
        if not sep:
            raise ConfigError(f"auditor.audit(..., {key}=...): settings are keywords section__key=value, e.g. "
                              "sweep__batch_size=64 or run__fail_on='high'.")
        _section(raw, section)[name] = value
    if out is not None:
        _section(raw, "run")["out_dir"] = str(out)
    if classes is not None:
        _section(raw, "model")["classes"] = [str(name) for name in classes]
    loaded = LoadedModel(model) if isinstance(model, nn.Module) else None
    if loaded is not None:  # the module stands in for any route the config names
        _section(raw, "model").update({key: None for key in (*ROUTES, "checkpoint")})
    elif model is not None:
        _section(raw, "model").update(_model_route(model))
    in_memory = dataset is not None and not isinstance(dataset, (str, Path))
    if isinstance(dataset, (str, Path)):
        data = _section(raw, "data")
        key = "manifest" if Path(dataset).suffix.lower() in (".csv", ".parquet") else "root"
        data.update({"root": None, "manifest": None, key: str(dataset)})
        if masks is not None:
            data["masks"] = str(masks)
    elif in_memory:
        if isinstance(masks, (str, Path)):
            raise AuditorError("masks for a torch Dataset are a sequence with one mask per item (or give each item a "
                               "\"mask\"); a mask folder goes with a dataset given as an ImageFolder path.")
        # Resuming needs a fingerprint of the data, which in memory costs a second read of every image: start afresh.
        _section(raw, "run")["resume"] = False
        _section(raw, "sweep")["decode_on_device"] = False  # there are no JPEG files to decode
    cfg = config_from_dict(raw)
    images = None
    if in_memory:
        images = functools.partial(InMemoryDataset, dataset, masks=masks, folder=Path(cfg.run.out_dir) / SHOWN_IMAGES)
    with claimed(cfg.run.out_dir, cfg.data), _logged_to(Path(cfg.run.out_dir) / "audit.log"), \
            _left_as_it_was(model if loaded else None):  # claimed: the folder is ours before audit.log is
        run_dir = run_audit(cfg, loaded, images)
    return Run(run_dir) if run_dir is not None else None


def load(run_dir: str | Path) -> Run:
    """A finished run directory (one `auditor audit` or `auditor.audit` wrote) as a Run."""
    return Run(run_dir)


def _raw_config(config) -> dict:
    """The config as nested dicts of sections, to which the keyword settings are added before it is checked."""
    if config is None:
        return {}
    if isinstance(config, Config):
        return config.to_dict()
    if isinstance(config, dict):
        return copy.deepcopy(config)
    return load_config(config).to_dict()


def _section(raw: dict, name: str) -> dict:
    if raw.get(name) is None:
        raw[name] = {}
    if not isinstance(raw[name], dict):
        raise ConfigError(f"Config section {name!r} must be a mapping of keys to values.")
    return raw[name]


def _model_route(model) -> dict:
    """The config's model keys for a model given as a dict or a path."""
    if isinstance(model, dict):
        return model
    if not isinstance(model, (str, Path)):
        raise AuditorError(f"auditor.audit takes the model as an nn.Module, a dict of model settings or a path, not "
                           f"{type(model).__name__}.")
    path = Path(model)
    if (path / "config.json").is_file():
        return {"huggingface": str(path)}
    return {"exported" if path.suffix == ".pt2" else "torchscript": str(path)}


@contextlib.contextmanager
def _left_as_it_was(model: nn.Module | None) -> Iterator[None]:
    """The caller's model as it was after the audit, also after an error: its modes and requires_grad flags
    (preserved_model_state), and every parameter's, gradient's and buffer's tensor, which the audit moves to its
    device and memory format. Hooks: the audit removes its own."""
    if model is None:
        yield
        return
    params = [(p, p.data, p.grad, None if p.grad is None else p.grad.data) for p in model.parameters()]
    buffers = [(module, name, buffer) for module in model.modules() for name, buffer in module._buffers.items()]
    with preserved_model_state(model):
        try:
            yield
        finally:
            for param, data, grad, grad_data in params:
                param.data = data
                if grad is not None:
                    grad.data = grad_data
                param.grad = grad
            for module, name, buffer in buffers:
                module._buffers[name] = buffer


@contextlib.contextmanager
def _logged_to(log_file: Path) -> Iterator[None]:
    """The run's audit.log as the CLI writes it (JSON lines), and the progress on stderr unless the caller's own
    logging set up the "auditor" logger."""
    from auditor.cli import _JsonFormatter, _LogFile  # noqa: PLC0415 - audit.log as the CLI writes it

    log_file.parent.mkdir(parents=True, exist_ok=True)
    added = [_LogFile(log_file, errors="backslashreplace")]
    added[0].setFormatter(_JsonFormatter())
    if not log.handlers:
        added.append(logging.StreamHandler())
        added[-1].setFormatter(logging.Formatter("auditor: %(message)s"))
    level = log.level
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    for handler in added:
        log.addHandler(handler)
    try:
        yield
    finally:
        for handler in added:
            log.removeHandler(handler)
            handler.close()
        log.setLevel(level)


class InMemoryDataset(AuditDataset):
    """A torch Dataset read into the item dicts AuditDataset makes of image files, so that the sweep and every check
    after it (batch norm, places, the causal check, marks, evidence) index it alike.

    Its samples are read once up front for their labels and ids (an item's "id", else its index); a dataset with
    integer `targets` (torchvision's) or a TensorDataset gives its labels without that read. The samples' paths
    point into `folder`, where write_shown_images puts the images the report shows: the report draws thumbnails
    from files, and a re-rendered report has nothing else.
    """

    def __init__(self, source: Dataset, cfg: DataConfig, classes: list[str] | None, masks, folder: Path):
        super().__init__([], cfg)
        self.source, self.masks = source, masks
        try:
            count = len(source)
        except TypeError:
            raise AuditorError(f"The dataset ({type(source).__name__}) has no len(): give a map-style torch Dataset. "
                               f"{EXPECTED}") from None
        if count == 0:
            raise AuditorError(f"The dataset is empty. {EXPECTED}")
        if masks is not None and len(masks) != count:
            raise AuditorError(f"masks has {len(masks)} entries for a dataset of {count} items: give one mask (or "
                               "None) per item, in the dataset's order.")
        self.classes = classes or _class_names(source)
        self.folder = Path(folder).resolve()
        shutil.rmtree(self.folder, ignore_errors=True)  # an earlier run's images are not these
        labels, ids, with_masks = self._labels_and_ids(count)
        self.expects_masks = masks is not None or with_masks
        self.samples = [Sample(id=i, path=str(self.folder / f"{n:07d}.png"), label=label)
                        for n, (i, label) in enumerate(zip(ids, labels))]

    def _labels_and_ids(self, count: int) -> tuple[list[int], list[str], bool]:
        first = self.source[0]
        self._parse(0, first)  # a wrong shape is named before anything runs
        known = _known_labels(self.source, count)
        if known is not None and not isinstance(first, dict):
            return known, [str(i) for i in range(count)], False
        labels, ids, with_masks = [], [], False
        for index in range(count):
            _, label, mask, sample_id = self._parse(index, first if index == 0 else self.source[index])
            labels.append(label)
            ids.append(sample_id)
            with_masks = with_masks or mask is not None
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            raise AuditorError(f"The dataset repeats the ids {repeated[:5]}: every item needs its own \"id\".")
        return labels, ids, with_masks

    def _parse(self, index: int, item) -> tuple:
        """(image, label, mask, id) of one item, checked: any other shape is one paragraph naming what was expected."""
        def fail(what: str):
            raise AuditorError(f"dataset[{index}] {what}. {EXPECTED}")

        if isinstance(item, dict):
            missing = sorted({"image", "label"} - set(item))
            if missing:
                fail(f"is a dict without {' and '.join(repr(key) for key in missing)} (its keys: {sorted(item)})")
            image, label, mask, sample_id = item["image"], item["label"], item.get("mask"), item.get("id")
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            (image, label), mask, sample_id = item, None, None
        else:
            fail(f"is {_describe(item)}, not (image, label) or a dict")
        if mask is None and self.masks is not None:
            mask = self.masks[index]
        if isinstance(image, torch.Tensor):
            if image.ndim == 2:
                fail(f"has an image of shape {tuple(image.shape)}, without channels: add them with image[None]")
            if image.ndim != 3:
                fail(f"has an image of shape {tuple(image.shape)}, not [C, H, W]")
            if image.shape[0] not in (1, 3, 4) and image.shape[-1] in (1, 3, 4):
                fail(f"has an image of shape {tuple(image.shape)}, channels last: permute(2, 0, 1) it to [C, H, W]")
            if image.dtype != torch.uint8 and not image.is_floating_point():
                fail(f"has an image of dtype {image.dtype}, neither uint8 pixels nor floating point")
        elif not isinstance(image, Image.Image):
            fail(f"has an image that is {_describe(image)}")
        if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
            label = label.item()
        if isinstance(label, np.integer):
            label = int(label)
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            fail(f"has the label {label!r}, not a class index")
        if mask is not None:
            shape = tuple(np.shape(mask))
            if len(shape) == 3 and shape[0] == 1:
                shape = shape[1:]
            if len(shape) != 2 or not isinstance(mask, (torch.Tensor, np.ndarray, Image.Image)):
                fail(f"has a mask that is {_describe(mask)}, not [H, W]")
        return image, label, mask, str(index if sample_id is None else sample_id)

    def __getitem__(self, index: int) -> dict:
        image, label, mask, _ = self._parse(index, self.source[index])
        if isinstance(image, torch.Tensor) and image.is_floating_point():
            image_t = self.geometry(tv_tensors.Image(image.detach().float().cpu())).as_subclass(torch.Tensor)
            size = (image.shape[-1], image.shape[-2])
        else:
            picture = plain_image(_as_picture(image), self.cfg.grayscale)
            pixels = torch.from_numpy(np.array(picture, dtype=np.uint8))
            image_t = self.model_input(pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1))
            size = picture.size
        mask, note = _mask_at(mask, size)
        return {"index": index, "ok": True, "image": image_t, "label": label,
                **self.mask_item(mask, note, size, tuple(image_t.shape[-2:]))}

    def write_shown_images(self, run_dir: Path, cfg: ReportConfig) -> None:
        """Write, as PNG at each sample's path, the images the report shows: the findings' evidence and the top
        confused pairs' (a few hundred at most). Floating-point images are shown stretched to their own range."""
        from auditor.evidence import evidence_ids  # noqa: PLC0415

        pairs_path = Path(run_dir) / "confused_pairs.json"
        pairs = json.loads(pairs_path.read_text()) if pairs_path.is_file() else []
        ids = evidence_ids(read_findings(run_dir), cfg) + [
            str(i) for pair in pairs[: cfg.top_pairs] for i in (pair.get("ids") or [])[: cfg.gallery_size]]
        position = positions(self.samples)
        self.folder.mkdir(parents=True, exist_ok=True)
        for sample_id in dict.fromkeys(ids):
            if sample_id in position:
                index = position[sample_id]
                _shown(self._parse(index, self.source[index])[0]).save(self.samples[index].path)


def _describe(value) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"a {type(value).__name__} of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _class_names(source) -> list[str] | None:
    names = getattr(source, "classes", None)
    return [str(name) for name in names] if isinstance(names, (list, tuple)) and names else None


def _known_labels(source, count: int) -> list[int] | None:
    """The labels a dataset states without reading its images: a TensorDataset's second tensor, `targets`."""
    values = source.tensors[1] if isinstance(source, TensorDataset) and len(source.tensors) > 1 else getattr(
        source, "targets", None)
    try:
        labels = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError):
        return None
    if labels.ndim != 1 or len(labels) != count or labels.is_floating_point() or labels.dtype == torch.bool:
        return None
    if len(labels) and int(labels.min()) < 0:
        return None  # read item by item, where the bad one is named
    return [int(v) for v in labels.tolist()]


def _as_picture(image) -> Image.Image:
    """A PIL image of uint8 pixels [C, H, W] (1 channel: L, 3: RGB, 4: RGBA), or the PIL image itself."""
    if isinstance(image, Image.Image):
        return image
    array = image.detach().cpu().permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def _mask_at(mask, size: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """A mask as bool [H, W] for an image of `size` (W, H): resized (nearest, with a note) where it differs, as a
    mask file is."""
    if mask is None:
        return None, ""
    pixels = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    pixels = pixels.reshape(pixels.shape[-2:]) != 0
    if pixels.shape[::-1] == tuple(size):
        return pixels, ""
    note = f"mask resized: {pixels.shape[1]}x{pixels.shape[0]} to {size[0]}x{size[1]} (nearest)"
    resized = Image.fromarray(pixels.astype(np.uint8) * 255).resize(tuple(size), Image.Resampling.NEAREST)
    return np.asarray(resized) != 0, note


def _shown(image) -> Image.Image:
    """An item's image for a thumbnail: pixels as they are; floating point stretched to 0-255."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        return plain_image(_as_picture(image))
    values = image.detach().float().cpu()
    values = values if values.shape[0] in (1, 3) else values[:1]
    low, high = float(values.min()), float(values.max())
    pixels = ((values - low) / max(high - low, 1e-12) * 255).round().to(torch.uint8)
    return _as_picture(pixels)


class Run:
    """A finished run directory as objects: what auditor.audit returns and auditor.load reads. The files stay the
    record (see auditor.runs); this reads them."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._run = load_run(self.path)  # checks it is a finished run; memory-maps the arrays

    @property
    def records(self) -> pd.DataFrame:
        """One row per audited image (records.parquet)."""
        return self._run.records

    @property
    def summary(self) -> dict:
        return self._run.summary

    @property
    def classes(self) -> list[str]:
        return self._run.classes

    @property
    def model_health(self) -> str | None:
        """ok, suspect or broken (None when the findings were not run)."""
        return self.summary.get("model_health")

    @property
    def findings(self) -> list[Finding]:
        """findings.json as typed records, most severe first."""
        return [Finding(**finding) for finding in self._run.findings()]

    @property
    def accepted(self) -> dict[str, dict]:
        """Finding id -> the baseline entry that accepts it (run.baseline; `auditor accept`)."""
        return accepted_findings(self.path)

    def findings_frame(self) -> pd.DataFrame:
        """The findings as a table: one row each, its samples counted, and whether the baseline accepts it."""
        accepted = self.accepted
        rows = [{**{k: v for k, v in f.items() if k != "samples"}, "n_samples": len(f["samples"]),
                 "accepted": f["id"] in accepted} for f in self._run.findings()]
        columns = ["id", "kind", "severity", "classes", "pair", "region", "metrics", "message", "n_samples", "accepted"]
        return pd.DataFrame(rows, columns=columns)

    @property
    def label_errors(self) -> pd.DataFrame:
        """Every suspected label error, most likely first (label_errors.csv)."""
        path = self.path / "label_errors.csv"
        if not path.is_file():
            return pd.DataFrame(columns=list(LABEL_ERROR_COLUMNS))
        return pd.read_csv(path, dtype={"id": str, "path": str, "label": str, "pred": str, "finding": str})

    def report(self) -> Path:
        """The path of report.html, rendered from the run directory where it is missing."""
        path = self.path / "report.html"
        if not path.is_file():
            from auditor.report import render_report  # noqa: PLC0415

            render_report(self.path)
        return path

    def __repr__(self) -> str:
        counts = self._counts()
        return (f"Run({str(self.path)!r}: model_health {self.model_health}, "
                + ", ".join(f"{counts[s]} {s}" for s in SEVERITIES) + ")")

    def _counts(self) -> dict[str, int]:
        findings = self._run.findings()
        return {severity: sum(f["severity"] == severity for f in findings) for severity in SEVERITIES}

    def _repr_html_(self) -> str:
        """Jupyter's inline display: the verdict, then the top findings."""
        e = html.escape
        findings, accepted, counts = self._run.findings(), self.accepted, self._counts()
        accuracy = self.summary.get("accuracy")
        verdict = (f"model health <b>{e(str(self.model_health or '–'))}</b>"
                   + (f" · accuracy {accuracy:.3f}" if isinstance(accuracy, float) else "")
                   + f" · {self.summary.get('n_audited', len(self.records)):,} images, {len(self.classes):,} classes"
                   + " · findings: " + ", ".join(f"{counts[s]} {s}" for s in SEVERITIES)
                   + (f" ({len(accepted)} accepted)" if accepted else ""))
        rows = "".join(
            f"<tr><td>{e(f['id'])}</td><td>{e(f['severity'])}{' (accepted)' if f['id'] in accepted else ''}</td>"
            f"<td>{e(f['kind'])}</td><td>{e(', '.join(f['classes']))}</td>"
            f"<td style=\"text-align:left\">{e(f['message'])}</td></tr>" for f in findings[:TOP_FINDINGS])
        table = ("<table><tr><th>id</th><th>severity</th><th>kind</th><th>classes</th><th>message</th></tr>"
                 f"{rows}</table>") if rows else ""
        more = (f"<p>{len(findings) - TOP_FINDINGS} more: <code>run.findings_frame()</code></p>"
                if len(findings) > TOP_FINDINGS else "")
        return (f"<div><p><b>auditor run</b> <code>{e(str(self.path))}</code><br>{verdict}</p>{table}{more}"
                f"<p>Report: <code>{e(str(self.path / 'report.html'))}</code></p></div>")
