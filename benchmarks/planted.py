"""What the planted-bias benchmarks share: planting, the cue-use check, the two audits, scoring and printing.

A benchmark family (`Family`) says which real items it draws, how it places them on a canvas and which cues it
plants on which class; everything else is here, written once. A run trains one small CNN, checks that the model
really uses each planted cue (accuracy on the cue's images with the cue and with it removed), audits the held-out
split through the real pipeline with masks and without them (the same ImageFolder, without data.masks), and scores
findings.json and label_errors.csv as issue 11 asks:

  shortcuts    every planted cue its kind allows, found at medium or above (a patch: with a region holding its
               centre, or one of a moving mark's places' centres; a frame or a text: with a region covering any of
               its pixels); a background cue missed without masks is "not applicable"; a cue the model does not
               use is "not used", neither found nor missed
  clean high   high-severity findings whose classes are all clean (listed)
  label errors precision at k from label_errors.csv, k = the planted flips the model predicts as their true class;
               also precision at 20 (findings' order and label_errors.csv), R-precision and recall

Nothing here tunes the product's thresholds: the audits run on their defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from torch import nn

from auditor.architectures import HuggingFaceLogits
from auditor.demo import DemoNet, model_input, train_classifier

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the audit imports the model factory as benchmarks.planted:BenchNet
    sys.path.insert(0, str(ROOT))

NOISE = 16  # every pixel gets max(pixel, uniform noise below this): no image is exactly black
SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2}
LABEL_ERROR_K = 20  # the fixed-k precision kept from the first benchmark
USES_CUE_MIN_DROP = 0.10  # the model uses a cue when removing it costs this much accuracy on the cue's images
PATCH_KINDS = ("spatial_shortcut", "strategy_cluster", "repeated_mark")
BACKGROUND_KINDS = ("background_reliance", "recognised_without_object")
FLIP_REGIMES = ("train-and-audit", "audit-only")
MODES = {"yes": ("masks",), "no": ("no-masks",), "both": ("masks", "no-masks")}

log = logging.getLogger("auditor")


class BenchNet(DemoNet):
    """The demo's CNN with a fourth conv layer (four conv layers, global average pooling, a linear head): a few
    minutes per run on 2 CPU cores. Named so that configs can load it as benchmarks.planted:BenchNet (a colour
    family's with factory_kwargs in_channels 3)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__(num_classes, extra_convs=1, in_channels=in_channels)


class ResidualBlock(nn.Module):
    """A ResNet basic block: two 3 x 3 convs with batch norm, the input added back (through a strided 1 x 1
    conv where the block halves the resolution or changes the width)."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False), nn.BatchNorm2d(channels_out), nn.ReLU(),
            nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False), nn.BatchNorm2d(channels_out),
        )  # fmt: skip
        self.skip = nn.Identity() if stride == 1 and channels_in == channels_out else nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.skip(x))


class BenchResNet(nn.Module):
    """A second architecture the rules were never designed on: a small ResNet (batch norm, residual blocks of
    16, 32 and 64 channels, 16 x 16 maps at 64 px, global average pooling, a linear head). `--arch resnet`."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            ResidualBlock(16, 16), ResidualBlock(16, 32, stride=2), ResidualBlock(32, 64, stride=2),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


TIMM_NAME = "resnet10t"
TIMM_KWARGS = {"in_chans": 1, "output_stride": 8}  # 8 x 8 maps at 64 px: a 224 px ImageNet model's 7 x 7, relatively


def timm_resnet(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A third architecture, through the route users bring one by: timm's resnet10t (random weights, one input
    channel), its last stages dilated so that its maps keep 8 x 8 cells at 64 px. `--arch timm`; audited through
    model.timm, not a factory."""
    import timm

    return timm.create_model(TIMM_NAME, pretrained=False, num_classes=num_classes,
                             **dict(TIMM_KWARGS, in_chans=in_channels))


def huggingface_resnet(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A fourth, through Hugging Face: transformers' ResNetForImageClassification (random weights, one channel,
    stages of 32 and 64 channels: 8 x 8 maps at 64 px), returning its logits for training. `--arch huggingface`;
    audited through model.huggingface, from the folder save_pretrained writes."""
    import transformers

    config = transformers.ResNetConfig(num_channels=in_channels, embedding_size=32, hidden_sizes=[32, 64],
                                       depths=[2, 2], num_labels=num_classes)
    return HuggingFaceLogits(transformers.ResNetForImageClassification(config))


# --arch: cnn, the one the rules were designed on; the others never were
ARCHITECTURES = {"cnn": BenchNet, "resnet": BenchResNet, "timm": timm_resnet, "huggingface": huggingface_resnet}


# ------------------------------------------------------------------------------------------------ the plan


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end exclusive


@dataclass(frozen=True)
class Cue:
    """One planted shortcut on `share` of class `cls`: a patch or a background.

    A patch: `pattern` ([h, w], [h, w, C] or one colour [C]) painted at `box`; or, a mark at varying places, at
    one of `places` drawn for each image that carries it; with a `stencil` (bool [h, w]), only its pixels are
    painted (a frame around the whole image, a text). A background: `texture(rng, size)` ([size, size] or
    [size, size, C]) instead of the family's background.
    """

    name: str
    cls: int
    share: float
    box: Box | None = None
    pattern: np.ndarray | None = None
    texture: Callable[[np.random.Generator, int], np.ndarray] | None = None
    description: str = ""
    places: tuple[Box, ...] = ()
    stencil: np.ndarray | None = None

    @property
    def boxes(self) -> tuple[Box, ...]:
        """Where the patch may be: its box, or its places; none for a background."""
        return self.places or ((self.box,) if self.box is not None else ())

    @property
    def kinds(self) -> tuple[str, ...]:
        return PATCH_KINDS if self.boxes else BACKGROUND_KINDS


@dataclass(frozen=True)
class Flip:
    """`share` of class `src` labelled `dst` in the audit split, and in the training split too unless the run's
    regime is "audit-only" (`FLIP_REGIMES`)."""

    src: int
    dst: int
    share: float


def dark_noise(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """The gray families' background: uniform noise below NOISE, uint8 [n, size, size]: no image is exactly black."""
    return rng.integers(0, NOISE, size=(n, size, size), dtype=np.uint8)


@dataclass(frozen=True)
class Family:
    """A benchmark family: its items, how they are placed, and the plan.

    `pool(split)` gives (items, labels) of 'train' or 'audit'; with `shared_pool` both come from one array and
    the audit subset excludes the training one. `place(items, rng, canvas)` gives the placed objects (uint8
    [N, canvas, canvas], or [N, canvas, canvas, channels] in colour), which pixels they draw, and the object masks
    (bool [N, canvas, canvas]). `background(rng, n, canvas)` gives what every image starts from, shaped as the
    objects. `mean` and `std`: one value, or one per channel.
    """

    name: str
    classes: list[str]
    canvas: int
    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]
    cues: tuple[Cue, ...]
    flip: Flip
    pool: Callable[[str], tuple[np.ndarray, np.ndarray]]
    place: Callable[[np.ndarray, np.random.Generator, int], tuple[np.ndarray, np.ndarray, np.ndarray]]
    id_prefix: str
    shared_pool: bool = False
    train_per_class: int = 1200
    audit_per_class: int = 400
    epochs: int = 6
    channels: int = 1  # 1: gray images [N, H, W]; 3: RGB [N, H, W, 3]
    background: Callable[[np.random.Generator, int, int], np.ndarray] = dark_noise

    @property
    def clean(self) -> list[int]:
        planted = {cue.cls for cue in self.cues} | {self.flip.src, self.flip.dst}
        return [c for c in range(len(self.classes)) if c not in planted]


# ------------------------------------------------------------------------------------------------ planting


def per_class_subset(labels: np.ndarray, count: int, rng: np.random.Generator, exclude=()) -> np.ndarray:
    """Sorted indices of up to `count` random items of each class, none of `exclude`: a balanced subset."""
    picked = [rng.permutation(np.setdiff1d(np.flatnonzero(labels == c), exclude))[:count] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def exact_share(candidates: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """A random round(share * n) of the candidate indices: planted counts are exact, not Bernoulli."""
    return rng.choice(candidates, size=int(round(share * len(candidates))), replace=False)


def square(size: int) -> np.ndarray:
    """A solid bright size x size patch."""
    return np.full((size, size), 255, dtype=np.uint8)


def plant(family: Family, items: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Place the items on canvases and draw which images carry which cue (exact shares) and which are flipped.

    Returns the layers (noise: the family's background, objects, drawn, masks, textures), the labels as given to
    the model (with the flips), true_labels, one bool array per cue name and `flipped`, and for a mark at varying
    places "<name> place", the index of each image's place; `compose` turns the layers into images.
    """
    n, size = len(items), family.canvas
    noise = family.background(rng, n, size)
    flags = {}
    for cue in family.cues:
        flags[cue.name] = np.zeros(n, dtype=bool)
        flags[cue.name][exact_share(np.flatnonzero(labels == cue.cls), cue.share, rng)] = True
    flipped = np.zeros(n, dtype=bool)
    flipped[exact_share(np.flatnonzero(labels == family.flip.src), family.flip.share, rng)] = True
    objects, drawn, masks = family.place(items, rng, size)
    textures = np.zeros_like(noise)
    for cue in family.cues:
        if cue.texture is not None:
            for i in np.flatnonzero(flags[cue.name]):
                textures[i] = cue.texture(rng, size)
    places = {f"{cue.name} place": rng.integers(len(cue.places), size=n) for cue in family.cues
              if len(cue.places) > 1}  # drawn last: the families without such a mark draw what they drew before
    noisy = np.where(flipped, family.flip.dst, labels)
    return {"noise": noise, "objects": objects, "drawn": drawn, "masks": masks, "textures": textures,
            "labels": noisy, "true_labels": labels, **flags, "flipped": flipped, **places}


def compose(family: Family, layers: dict, without: str | None = None) -> np.ndarray:
    """The images, uint8 [N, canvas, canvas] (or [..., channels]): the background (the background cue's texture
    instead where planted), the objects over it, the patches on top (each at its image's place; through its
    stencil, if any); `without` names one cue to leave out (the cue-use check)."""
    images = layers["noise"].copy()
    for cue in family.cues:
        if cue.texture is not None and cue.name != without:
            on = layers[cue.name]
            images[on] = layers["textures"][on]
    images[layers["drawn"]] = layers["objects"][layers["drawn"]]  # the background shows through the gaps
    for cue in family.cues:
        if not cue.boxes or cue.name == without:
            continue
        place = layers.get(f"{cue.name} place", np.zeros(len(images), dtype=np.int64))
        for p, (x0, y0, x1, y1) in enumerate(cue.boxes):
            on = layers[cue.name] & (place == p)
            if cue.stencil is None:
                images[on, y0:y1, x0:x1] = cue.pattern
            else:
                stencil = cue.stencil if images.ndim == 3 else cue.stencil[..., None]
                images[on, y0:y1, x0:x1] = np.where(stencil, cue.pattern, images[on, y0:y1, x0:x1])
    return images


# ------------------------------------------------------------------------------------------------ training, cue use


def train(family: Family, images: np.ndarray, labels: np.ndarray, epochs: int, seed: int,
          arch: str = "cnn") -> nn.Module:
    """The benchmark's model, trained like the demo's; the logged accuracy is on the (noisy) training labels."""
    torch.manual_seed(seed)
    return train_classifier(new_model(family, arch), images, labels, epochs=epochs, seed=seed,
                            lr=2e-3, batch_size=128, mean=family.mean, std=family.std)


def new_model(family: Family, arch: str) -> nn.Module:
    """An untrained `arch` for the family's classes and channels (the gray families' as before: no channel
    argument)."""
    extra = {} if family.channels == 1 else {"in_channels": family.channels}
    return ARCHITECTURES[arch](len(family.classes), **extra)


def predict(model: nn.Module, images: np.ndarray, family: Family) -> np.ndarray:
    """The model's predicted classes for uint8 images, normalised as in training."""
    if len(images) == 0:
        return np.zeros(0, dtype=np.int64)
    x = model_input(images, family.mean, family.std)
    with torch.no_grad():
        return torch.cat([model(x[i: i + 256]).argmax(1) for i in range(0, len(x), 256)]).numpy()


def cue_use(family: Family, model: nn.Module, layers: dict, images: np.ndarray) -> dict[str, dict]:
    """For each cue, accuracy (against the true class) on the audit images carrying it, with the cue and removed.

    The model uses the cue when removing it costs at least USES_CUE_MIN_DROP; a cue it does not use cannot be
    missed by the audit.
    """
    result = {}
    for cue in family.cues:
        on = layers[cue.name]
        carrying = {key: value[on] for key, value in layers.items()}  # every layer is one row per image
        truth = carrying["true_labels"]
        present = float((predict(model, images[on], family) == truth).mean()) if on.any() else math.nan
        removed_images = compose(family, carrying, without=cue.name)
        removed = float((predict(model, removed_images, family) == truth).mean()) if on.any() else math.nan
        result[cue.name] = {"n": int(on.sum()), "with_cue": present, "cue_removed": removed,
                            "used": bool(present - removed >= USES_CUE_MIN_DROP)}
    return result


# ------------------------------------------------------------------------------------------------ scoring


def normalised(box, size: int) -> list[float]:
    """Pixel box (x0, y0, x1, y1) as the findings' [x0, y0, x1, y1] in [0, 1]."""
    return [v / size for v in box]


def iou(a, b) -> float:
    """IoU of two [x0, y0, x1, y1] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centre_inside(region, box) -> bool:
    """The region rule: the planted patch's centre lies inside the finding's region (both normalised)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


def covers_stencil(region, box: Box, stencil: np.ndarray, size: int) -> bool:
    """The region rule of a stencilled patch (a frame, a text): the finding's region (normalised) covers at least
    one of its painted pixels. No one centre stands for a frame, and a text is wider than a finding's region."""
    x0, y0, x1, y1 = (math.floor(region[0] * size), math.floor(region[1] * size), math.ceil(region[2] * size),
                      math.ceil(region[3] * size))
    bx0, by0 = box[0], box[1]
    rows = slice(max(y0 - by0, 0), max(y1 - by0, 0))
    cols = slice(max(x0 - bx0, 0), max(x1 - bx0, 0))
    return bool(stencil[rows, cols].any())


def holds_cue(region, cue: Cue, size: int) -> bool:
    """Whether a finding's region (normalised) is at the patch cue: it holds the centre of the cue's box, or of any
    one of a moving mark's places (its place varies from image to image); for a stencilled patch,
    `covers_stencil`."""
    if cue.stencil is not None:
        return any(covers_stencil(region, box, cue.stencil, size) for box in cue.boxes)
    return any(centre_inside(region, normalised(box, size)) for box in cue.boxes)


def best_match(findings: list[dict], kinds, cls: str, at: Callable[[list[float]], bool] | None = None,
               pair=None) -> dict | None:
    """The most severe finding of one of `kinds` about class `cls` (and, given `at`, with a region it accepts,
    e.g. `holds_cue`; given a pair, with that pair); None when there is none."""
    matches = [
        f for f in findings
        if f.get("kind") in kinds and f.get("classes") and f["classes"][0] == cls
        and (at is None or (f.get("region") is not None and at(f["region"])))
        and (pair is None or f.get("pair") == pair)
    ]  # fmt: skip
    return min(matches, key=lambda f: SEVERITY_RANK.get(f["severity"], 3), default=None)


def at_least_medium(finding: dict | None) -> bool:
    return finding is not None and SEVERITY_RANK.get(finding["severity"], 3) <= SEVERITY_RANK["medium"]


def precision_at_k(ranked_ids: list[str], relevant: set[str], k: int) -> float:
    """Share of the first k ranked ids that are relevant; ids missing from a list shorter than k count as misses."""
    return sum(i in relevant for i in ranked_ids[:k]) / k if k else math.nan


def label_error_ranking(findings: list[dict]) -> list[str]:
    """Sample ids of the suspected_label_error findings, in the findings' order (most suspect first)."""
    return [s for f in findings if f.get("kind") == "suspected_label_error" for s in f["samples"]]


def cue_status(found: bool, used: bool, background: bool, with_masks: bool) -> str:
    """found | missed | not used (the model does not use the cue) | not applicable (a background cue without
    masks, unless found all the same)."""
    if not used:
        return "not used"
    if found:
        return "found"
    return "not applicable" if background and not with_masks else "missed"


def clean_high(findings: list[dict], clean: set[str]) -> list[dict]:
    """High-severity findings whose classes (one or more) are all clean: false alarms by construction."""
    return [f for f in findings if f["severity"] == "high" and f.get("classes") and set(f["classes"]) <= clean]


def score(family: Family, findings: list[dict], uses: dict[str, dict], with_masks: bool, flipped_ids: set[str],
          ranking: list[str], predicted_true: int) -> dict:
    """Each planted bias's status and best finding, the high findings on clean classes, the label-error measures.

    `ranking` is label_errors.csv's id column in its order; `predicted_true` is k, the planted flips the model
    predicts as their true class.
    """
    names, size = family.classes, family.canvas
    rows = []
    for cue in family.cues:
        boxes = [normalised(b, size) for b in cue.boxes]  # none for a background, several for a moving mark
        at = (lambda region, cue=cue: holds_cue(region, cue, size)) if boxes else None
        match = best_match(findings, cue.kinds, names[cue.cls], at)
        rows.append({
            "bias": cue.name, "class": names[cue.cls], "kinds": list(cue.kinds),
            "box": boxes[0] if len(boxes) == 1 else None, "places": boxes, "finding": brief(match),
            "status": cue_status(at_least_medium(match), uses[cue.name]["used"], not boxes, with_masks),
            "iou": max(iou(match["region"], b) for b in boxes) if match is not None and boxes else None,
        })  # fmt: skip
    flip = family.flip
    pair = {"true": names[flip.dst], "pred": names[flip.src]}
    match = best_match(findings, ("suspected_label_error",), names[flip.dst], pair=pair)
    rows.append({"bias": "label noise", "class": names[flip.dst], "kinds": ["suspected_label_error"], "box": None,
                 "places": [], "finding": brief(match), "status": "found" if at_least_medium(match) else "missed",
                 "iou": None})
    n = len(flipped_ids)
    hits = sum(i in flipped_ids for i in ranking)
    in_findings = label_error_ranking(findings)
    return {
        "rows": rows,
        "found": sum(r["status"] == "found" for r in rows),
        "applicable": sum(r["status"] in ("found", "missed") for r in rows),
        "clean_high": [brief(f) for f in clean_high(findings, {names[c] for c in family.clean})],
        "label_errors": {
            "k": predicted_true, "n_flipped": n, "suspects": len(ranking), "hits": hits,
            "precision_at_k": precision_at_k(ranking, flipped_ids, predicted_true),
            "precision_at_20_findings": precision_at_k(in_findings, flipped_ids, min(LABEL_ERROR_K, n)),
            "precision_at_20_csv": precision_at_k(ranking, flipped_ids, min(LABEL_ERROR_K, n)),
            "r_precision": precision_at_k(ranking, flipped_ids, n),
            "recall": hits / n if n else math.nan,
        },
    }


# ------------------------------------------------------------------------------------------------ auditing


def audit(config: dict, out: Path) -> tuple[Path, list[dict], dict]:
    """Write config.yaml into `out`, run the real audit on it; returns the run directory, findings and summary."""
    from auditor.pipeline import run_audit  # noqa: PLC0415
    from auditor.config import load_config  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = run_audit(load_config(out / "config.yaml"))
    findings = json.loads((run_dir / "findings.json").read_text())["findings"]
    summary = json.loads((run_dir / "summary.json").read_text())
    return run_dir, findings, summary


def model_health(summary: dict) -> str:
    """summary.json's model_health (ok | suspect | broken), or "absent" where this version does not write it."""
    return str(summary.get("model_health", "absent"))


def above_low(findings: list[dict]) -> list[dict]:
    """The findings a reviewer is asked to act on: medium or high."""
    return [f for f in findings if SEVERITY_RANK.get(f["severity"], 3) <= SEVERITY_RANK["medium"]]


def audit_modes(config_for: Callable[[str], dict], out: Path, modes) -> dict[str, dict]:
    """Audit once per mode ("masks", "no-masks") and summarise each run for models that are not planted-bias
    benchmarks: accuracy, the class predicted most and its share, model_health, and the findings above low."""
    import pandas as pd  # noqa: PLC0415

    runs = {}
    for mode in modes:
        started = time.perf_counter()
        run_dir, findings, summary = audit(config_for(mode), out / f"config-{mode}")
        preds = pd.read_parquet(run_dir / "records.parquet", columns=["pred"])["pred"].astype(str).value_counts()
        runs[mode] = {
            "n_images": int(preds.sum()), "accuracy": summary["accuracy"], "model_health": model_health(summary),
            "top_pred": str(preds.index[0]), "top_pred_share": float(preds.iloc[0] / preds.sum()),
            "n_findings": len(findings), "above_low": [brief(f) for f in above_low(findings)],
            "n_high": sum(f["severity"] == "high" for f in findings), "run_dir": str(run_dir),
            "audit_s": time.perf_counter() - started,
        }
    return runs


def health_table(title: str, runs: dict[str, dict]) -> str:
    """One row per audit: what a broken or a real model's run says about itself."""
    lines = [f"| {title} | images | accuracy | predicted most (share) | model_health | high | findings above low |",
             "|---|---:|---:|---|---|---:|---|"]
    for name, r in runs.items():
        listed = "; ".join(f"{f['id']} {f['kind']} ({f['severity']}) {'/'.join(f['classes'])}" for f in r["above_low"])
        lines.append(f"| {name} | {r['n_images']} | {r['accuracy']:.3f} | {r['top_pred']} ({r['top_pred_share']:.2f}) "
                     f"| {r['model_health']} | {r['n_high']} | {len(r['above_low'])}{': ' if listed else ''}{listed} |")
    return "\n".join(lines)


def write_scores(result: dict, out: Path, json_path: Path | None) -> None:
    """The scores as JSON in <out>/scores.json and, given --json, there too (for the README tables)."""
    text = json.dumps(plain(result), indent=1)
    for path in {out / "scores.json", json_path or out / "scores.json"}:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"scores: {json_path or out / 'scores.json'}")


def common_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """The flags every benchmark script takes."""
    parser.add_argument("--seed", type=int, default=0,
                        help="design seeds are 0-2; 3-10 were each held out once (README); a new rule needs a new seed")
    parser.add_argument("--out", type=Path, default=None, help=f"default {default_out}")
    parser.add_argument("--masks", choices=sorted(MODES), default="both", help="audit with masks, without, or both")
    parser.add_argument("--json", type=Path, default=None, help="a copy of <out>/scores.json here")


def read_label_errors(run_dir: Path) -> list[str]:
    """label_errors.csv's ids, in its order (read by column name: other columns may come and go)."""
    import pandas as pd  # noqa: PLC0415

    return [str(i) for i in pd.read_csv(run_dir / "label_errors.csv", dtype={"id": str})["id"]]


def cleanlab_ranking(run_dir: Path) -> list[str]:
    """The floor: every image's id, least likely label first, by cleanlab's `get_label_quality_scores`
    (self_confidence) on the run's own probs.npy."""
    import pandas as pd  # noqa: PLC0415
    from cleanlab.rank import get_label_quality_scores  # noqa: PLC0415

    records = pd.read_parquet(run_dir / "records.parquet", columns=["row", "id", "label_idx"])
    probs = np.load(run_dir / "probs.npy").astype(np.float64)[records["row"].to_numpy()]
    quality = get_label_quality_scores(records["label_idx"].to_numpy(), probs / probs.sum(axis=1, keepdims=True),
                                       method="self_confidence")
    return [str(i) for i in records["id"].to_numpy()[np.argsort(quality, kind="stable")]]


def predicted_as(run_dir: Path, ids: set[str], cls: str) -> int:
    """How many of the images `ids` the audited model predicts as class `cls` (records.parquet)."""
    import pandas as pd  # noqa: PLC0415

    records = pd.read_parquet(run_dir / "records.parquet", columns=["id", "pred"])
    return int((records[records["id"].astype(str).isin(ids)]["pred"].astype(str) == cls).sum())


# ------------------------------------------------------------------------------------------------ printing


def brief(f: dict | None) -> dict | None:
    """A finding as the scores keep it: what identifies it, without its samples and message."""
    return None if f is None else {k: f.get(k) for k in ("id", "kind", "severity", "classes", "region")}


def describe(f: dict | None) -> str:
    if f is None:
        return "none"
    region = f" region {[round(v, 3) for v in f['region']]}" if f.get("region") else ""
    return f"{f['id']} {f['kind']} ({f['severity']}){region}"


def fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def cue_table(family: Family, uses: dict[str, dict]) -> str:
    lines = ["| planted cue | class | images | accuracy with cue | cue removed | model uses it |",
             "|---|---|---:|---:|---:|---|"]
    for cue in family.cues:
        u = uses[cue.name]
        lines.append(f"| {cue.name} ({cue.description}) | {family.classes[cue.cls]} | {u['n']} | "
                     f"{fmt(u['with_cue'])} | {fmt(u['cue_removed'])} | {'yes' if u['used'] else '**no**'} |")
    return "\n".join(lines)


def run_table(family: Family, mode: str, seed: int, result: dict, summary: dict) -> str:
    """One run's table: each planted bias, then the measures against issue 11's targets."""
    lines = [f"| planted bias ({family.name}, seed {seed}, {mode}) | class | status | best matching finding | "
             "region IoU |", "|---|---|---|---|---|"]
    for row in result["rows"]:
        status = row["status"] if row["status"] != "missed" else "**missed**"
        lines.append(f"| {row['bias']} | {row['class']} | {status} | {describe(row['finding'])} | "
                     f"{'' if row['iou'] is None else fmt(row['iou'])} |")
    le = result["label_errors"]
    high = result["clean_high"]
    listed = "; ".join(f"{f['id']} {f['kind']} {'/'.join(f['classes'])}" for f in high)
    flip = family.flip
    lines += [
        "", "| measure | value | target |", "|---|---|---|",
        f"| planted biases found (of those applicable) | {result['found']} / {result['applicable']} | all |",
        f"| high-severity findings on clean classes | {len(high)}{': ' + listed if listed else ''} | 0 |",
        f"| label-error precision at k = {le['k']} (flips predicted {family.classes[flip.src]}, label_errors.csv) | "
        f"{fmt(le['precision_at_k'])} | >= 0.8 |",
        f"| the floor: cleanlab self_confidence on probs.npy, precision at k = {le['k']} | "
        f"{fmt(le.get('cleanlab_precision_at_k', math.nan))} | <= the line above |",
        f"| label-error precision at 20 (findings.json, findings' order) | {fmt(le['precision_at_20_findings'])} | |",
        f"| label-error precision at 20 (label_errors.csv) | {fmt(le['precision_at_20_csv'])} | |",
        f"| label-error R-precision (k = {le['n_flipped']} flipped) | {fmt(le['r_precision'])} | |",
        f"| flipped among all {le['suspects']} suspects (recall) | {fmt(le['recall'])} | |",
        f"| model_health (summary.json) | {model_health(summary)} | ok |",
        f"| audit accuracy (noisy labels) | {summary['accuracy']:.3f} | |",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def build(family: Family, seed: int, train_per_class: int, audit_per_class: int) -> tuple[dict, dict, list[str]]:
    """The training and the audit layers (the rng draws in a fixed order: a seed gives the same data)."""
    rng = np.random.default_rng(seed)
    items, labels = family.pool("train")
    train_idx = per_class_subset(labels, train_per_class, rng)
    train_layers = plant(family, items[train_idx], labels[train_idx], rng)
    items, labels = family.pool("audit")
    audit_idx = per_class_subset(labels, audit_per_class, rng, exclude=train_idx if family.shared_pool else ())
    audit_layers = plant(family, items[audit_idx], labels[audit_idx], rng)
    return train_layers, audit_layers, [f"{family.id_prefix}-{i:05d}" for i in audit_idx]


def run(family: Family, seed: int, out: Path, modes, train_per_class: int, audit_per_class: int,
        epochs: int, reuse: bool = False, arch: str = "cnn", flips: str = "train-and-audit") -> dict:
    """Build, train once, check cue use, audit with and/or without masks, score; prints as it goes.

    reuse: take the model an earlier run of the same seed left in `out` (the data is rebuilt from the seed, the
    same bit for bit), so a change to the audit is measured without training again. arch: the model
    (`ARCHITECTURES`). flips (`FLIP_REGIMES`): "train-and-audit" plants the flips in both splits, so the model
    learns part of the noise; "audit-only" trains on the true labels, the held-out test set with annotation errors
    that most audits look at. The audit split is the same in both."""
    from auditor.sources import write_image_folder  # noqa: PLC0415

    started = time.perf_counter()
    names = family.classes
    train_layers, audit_layers, ids = build(family, seed, train_per_class, audit_per_class)
    train_images, audit_images = compose(family, train_layers), compose(family, audit_layers)
    labels = audit_layers["labels"]
    # Record ids are paths relative to the ImageFolder root: <label folder>/<name>.png, the label being the noisy one.
    flipped_ids = {f"{names[labels[i]]}/{ids[i]}.png" for i in np.flatnonzero(audit_layers["flipped"])}
    print(f"{family.name}: {len(train_images)} training and {len(audit_images)} audit images "
          f"({time.perf_counter() - started:.0f} s); {len(flipped_ids)} audit images flipped "
          f"{names[family.flip.src]} -> {names[family.flip.dst]}", flush=True)

    t0 = time.perf_counter()
    if reuse and (out / "model.pt").is_file():
        model = new_model(family, arch)
        model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
        model.eval()
        print(f"reusing the model trained earlier: {out / 'model.pt'}")
    else:
        train_labels = train_layers["labels"] if flips == "train-and-audit" else train_layers["true_labels"]
        model = train(family, train_images, train_labels, epochs, seed, arch)
    train_time = time.perf_counter() - t0
    uses = cue_use(family, model, audit_layers, audit_images)
    print(f"trained in {train_time:.0f} s; does the model use each cue? (audit images carrying it, true labels; "
          f"'uses it' = accuracy drops by >= {USES_CUE_MIN_DROP:.2f} with the cue removed)")
    print(cue_table(family, uses), flush=True)

    out.mkdir(parents=True, exist_ok=True)
    for folder in ("data", "masks"):
        shutil.rmtree(out / folder, ignore_errors=True)  # a folder of an earlier seed would mix in its images
    torch.save(model.state_dict(), out / "model.pt")
    if arch == "huggingface":  # the folder model.huggingface reads, its labels named
        config = model.model.config
        config.id2label, config.label2id = dict(enumerate(names)), {name: i for i, name in enumerate(names)}
        model.model.save_pretrained(out / "huggingface")
    write_image_folder(out / "data", out / "masks", audit_images, audit_layers["masks"], labels, names, ids)
    (out / "flipped.json").write_text(json.dumps(sorted(flipped_ids)))

    runs = {}
    for mode in modes:
        t0 = time.perf_counter()
        config = {
            "model": model_section(arch, out / "model.pt", names, family.channels),
            "data": {"root": str(out / "data"), **({"masks": str(out / "masks")} if mode == "masks" else {}),
                     "grayscale": family.channels == 1, "mean": per_channel(family.mean, family.channels),
                     "std": per_channel(family.std, family.channels),
                     "resize": [family.canvas, family.canvas]},  # as trained, whatever timm says
            "sweep": {"batch_size": 128, "device": "cpu", "seed": seed},
            "run": {"out_dir": str(out / f"run-{mode}"), "resume": False},
        }
        run_dir, findings, summary = audit(config, out / f"config-{mode}")
        k = predicted_as(run_dir, flipped_ids, names[family.flip.src])
        result = score(family, findings, uses, mode == "masks", flipped_ids, read_label_errors(run_dir), k)
        result["label_errors"]["cleanlab_precision_at_k"] = precision_at_k(cleanlab_ranking(run_dir), flipped_ids, k)
        print(f"\n{mode}: run directory {run_dir}, audit {time.perf_counter() - t0:.0f} s; findings.json:")
        for f in findings:
            print(f"  {f['id']} {f['severity']:6} {f['kind']:26} {', '.join(f['classes'])}"
                  f"{' region ' + str([round(v, 3) for v in f['region']]) if f.get('region') else ''}")
        print()
        print(run_table(family, mode, seed, result, summary), flush=True)
        runs[mode] = {**result, "model_health": model_health(summary), "accuracy": summary["accuracy"],
                      "n_findings": len(findings), "run_dir": str(run_dir), "audit_s": time.perf_counter() - t0}
    runtime = time.perf_counter() - started
    print(f"\n{family.name} seed {seed}: training {train_time:.0f} s, total {runtime:.0f} s", flush=True)
    return {"benchmark": family.name, "seed": seed, "arch": arch, "flips": flips, "classes": names,
            "clean": [names[c] for c in family.clean],
            "cue_use": uses, "runs": runs, "train_s": train_time, "runtime_s": runtime}


def per_channel(value: float | tuple[float, ...], channels: int) -> list[float]:
    """A family's mean or std as the audit's data.mean / data.std: one plain float per channel."""
    values = [float(v) for v in value] if isinstance(value, (tuple, list)) else [float(value)] * channels
    if len(values) != channels:
        raise ValueError(f"{len(values)} values for {channels} channels: {value}")
    return values


def model_section(arch: str, checkpoint: Path, names: list[str], channels: int = 1) -> dict:
    """The audit's `model` config: the benchmark's own nets through model.factory, timm's through model.timm,
    transformers' through model.huggingface (whose folder records its channels); a colour family's nets are built
    with `channels` input channels."""
    if arch == "huggingface":
        return {"huggingface": str(checkpoint.parent / "huggingface")}  # its classes: the folder's id2label
    if arch == "timm":
        return {"timm": TIMM_NAME, "factory_kwargs": dict(TIMM_KWARGS, num_classes=len(names), in_chans=channels),
                "checkpoint": str(checkpoint), "classes": names}
    section = {"factory": f"benchmarks.planted:{ARCHITECTURES[arch].__name__}", "checkpoint": str(checkpoint),
               "classes": names}
    if channels != 1:  # the gray families' configs stay as they were
        section["factory_kwargs"] = {"num_classes": len(names), "in_channels": channels}
    return section


def save_exported(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """The module as a torch.export program with a dynamic batch dimension, as `auditor` asks users to export."""
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return path


def plain(value):
    """JSON-ready: NaN as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def main(family: Family, doc: str, argv=None) -> int:
    """The command line every planted-bias benchmark shares."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    common_arguments(parser, f"reports/{family.name}-benchmark/seed-<seed>")
    parser.add_argument("--train-per-class", type=int, default=family.train_per_class)
    parser.add_argument("--audit-per-class", type=int, default=family.audit_per_class)
    parser.add_argument("--epochs", type=int, default=family.epochs)
    parser.add_argument("--reuse", action="store_true", help="audit again with the model an earlier run left in --out")
    parser.add_argument("--flips", choices=FLIP_REGIMES, default=FLIP_REGIMES[0],
                        help="label flips in the training and the audit split (the model learns part of them), or in "
                             "the audit split only (a held-out test set with annotation errors)")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="cnn",
                        help="the model: cnn (the rules were designed on it); resnet, timm or huggingface (never used "
                             "in their design)")
    args = parser.parse_args(argv)
    quiet_logging()
    suffix = ("" if args.arch == "cnn" else f"-{args.arch}") + ("" if args.flips == FLIP_REGIMES[0] else f"-{args.flips}")
    out = args.out or ROOT / "reports" / f"{family.name}-benchmark" / f"seed-{args.seed}{suffix}"
    result = run(family, args.seed, out, MODES[args.masks], args.train_per_class, args.audit_per_class, args.epochs,
                 reuse=args.reuse, arch=args.arch, flips=args.flips)
    write_scores(result, out, args.json)
    return 0


def quiet_logging() -> None:
    """Warnings from libraries, progress lines from the audit (the training epochs, the sweep)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
