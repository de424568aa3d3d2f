"""Do the model's batch-norm running statistics fit this data? Run it once more with each batch's own statistics.

A model audited in eval mode normalises with the running statistics it kept in training. When they do not fit
the audited images (statistics that lag the last training steps, or a preprocessing other than training's: mean
and std, resize, channel order) the model can lose half its accuracy while its weights are fine, and every map
then explains that broken state. Normalising with the batch's own statistics removes the mismatch: a model that
is much more accurate that way is not the model that was trained. `model_health` reads the figures this writes
(batch_norm.json) and calls such a model suspect, saying why.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from auditor.findings.run import BATCH_NORM_FILE
from auditor.runs import write_json
from auditor.timing import stage

log = logging.getLogger("auditor")
MIN_BATCH = 16  # smaller batches give batch statistics too noisy to compare with the running ones


def batch_norm_layers(model) -> list[nn.Module]:
    """The model's batch-norm layers that keep running statistics (timm's BatchNormAct2d included; frozen and
    exported ones are not nn BatchNorm modules and are left out: their statistics cannot be swapped)."""
    if not isinstance(model, nn.Module):
        return []
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def batch_statistics(layers: list[nn.Module]) -> Iterator[None]:
    """Within: the layers normalise with each batch's statistics and leave their running statistics untouched
    (training mode without tracking: PyTorch then neither reads nor updates the buffers)."""
    saved = [(m.training, m.track_running_stats) for m in layers]
    try:
        for m in layers:
            m.train()
            m.track_running_stats = False
        yield
    finally:
        for m, (training, tracking) in zip(layers, saved):
            m.train(training)
            m.track_running_stats = tracking


def check_indices(n: int, cap: int, seed: int) -> list[int]:
    """A seeded random sample of at most `cap` dataset indices, in random order: batches mixing the classes, as
    in training (an ImageFolder in dataset order gives batches of one class, whose statistics are not the data's)."""
    return [int(i) for i in np.random.default_rng(seed).permutation(n)[:cap]]


@stage("batch_norm_check_s")
def batch_norm_check(model, batches: Iterable[dict], predictions: Mapping[int, int], device) -> dict | None:
    """Accuracy on the batches as the sweep measured it (running statistics) and with batch statistics.

    Returns {n, accuracy, batch_stats_accuracy}, counting batches of at least MIN_BATCH images; None when the
    model has no batch norm with running statistics or no batch is large enough."""
    layers = batch_norm_layers(model)
    if not layers:
        return None
    n = running = batch = 0
    with torch.no_grad(), batch_statistics(layers):
        for b in batches:
            labels = b["label"].long()
            if len(labels) < MIN_BATCH:
                continue
            guess = model(b["image"].to(device)).argmax(dim=1).cpu()
            swept = torch.tensor([predictions[int(i)] for i in b["index"]], dtype=torch.long)
            n += len(labels)
            running += int((swept == labels).sum())
            batch += int((guess == labels).sum())
    if n == 0:
        return None
    return {"n": n, "accuracy": running / n, "batch_stats_accuracy": batch / n}


def batch_norm_room(sample: list[int], predictions: Mapping[int, int], labels, batch_size: int) -> float:
    """The most accuracy batch statistics could gain on `sample` (dataset indices, in the check's order): its
    images the sweep got wrong, over the images `batch_norm_check` counts (batches of `batch_size`, those of at
    least MIN_BATCH). 0 where no batch counts."""
    batches = [sample[k : k + batch_size] for k in range(0, len(sample), batch_size)]
    counted = sum(len(part) for part in batches if len(part) >= MIN_BATCH)
    wrong = sum(predictions[i] != labels[i] for i in sample)
    return min(1.0, wrong / counted) if counted else 0.0


def write_batch_norm(run_dir: Path, figures: dict | None) -> None:
    """batch_norm.json, or no file when the check did not apply."""
    if figures is not None:
        write_json(Path(run_dir) / BATCH_NORM_FILE, figures)
