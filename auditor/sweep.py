"""The only loop over the dataset: per batch one forward, a head-only backward per class, metrics on the device,
and one copy to the host.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from auditor.cams import CamMethod, ReshapeFn, class_maps, get_method, preserved_model_state
from auditor.config import Config
from auditor.data import AuditDataset, EncodedJpegs, collate, decode_on_device
from auditor.duplicates import image_features
from auditor.faithfulness import deletion_drops
from auditor.properties import file_properties, thumb_properties
from auditor.geometry import MapGeometry, upsample
from auditor.hooks import forward_pre_hook
from auditor import metrics
from auditor.metrics import MAP_KINDS, MapView
from auditor.runs import ARRAY_FIELDS, ShardWriter
from auditor.timing import count

log = logging.getLogger("auditor")

# Counterfactual Grad-CAM at the target layer's resolution, [N, 2, h, w] float16 (predicted, true class), each
# scaled to 1: a map-like array field, so it goes through the shards into RUN_DIR/maps_counterfactual_cells.npy.
COUNTERFACTUAL_CELLS = "maps_counterfactual_cells"
PROPERTY_SIDE = 64  # the side image properties are measured at where the run keeps no thumbs


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for "auto"; otherwise exactly the device asked for."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def uses_channels_last(device: torch.device, cfg: Config) -> bool:
    """sweep.channels_last applies on CUDA (cuDNN) and on the CPU (oneDNN): both run convolutions faster in it
    (resnet18 on this project's CPU: about 1.3x)."""
    return cfg.sweep.channels_last and device.type in ("cuda", "cpu")


@contextlib.contextmanager
def channels_last_inputs(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Inside the block, every 4-D input reaches the model in channels_last, as the sweep's batches do: a
    channels_last model fed contiguous images reorders them in every convolution (resnet18 at 48 px on the CPU:
    0.40 s a batch of 64 against 0.28 s)."""
    if not enabled:
        yield
        return

    def hook(_module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
            return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
        return None

    with forward_pre_hook(model, hook):
        yield


def make_loader(dataset: AuditDataset, indices: Sequence[int], cfg: Config, device: torch.device) -> DataLoader:
    """The sweep's DataLoader over `indices`, in order; the causal check and the counterfactual maps read their
    images through the same settings. On CUDA: pinned memory, so host-to-device copies overlap compute, and
    persistent workers, so a loader iterated again does not start its workers afresh."""
    workers = cfg.sweep.num_workers
    source = EncodedJpegs(dataset) if cfg.sweep.decode_on_device else dataset
    loader = DataLoader(Subset(source, list(indices)), batch_size=cfg.sweep.batch_size, shuffle=False,
                        num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
                        persistent_workers=device.type == "cuda" and workers > 0)
    return _Counted(_DecodedOnDevice(loader, dataset, device) if cfg.sweep.decode_on_device else loader)


class _Counted:
    """A loader whose batches count, as they arrive, the images read from files into the stage that reads them
    (`auditor.timing.count`): DataLoader workers decode in other processes, so the count is taken here."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):  # the loader's settings (pin_memory, num_workers, ...) read through
        return getattr(self.loader, name)

    def __iter__(self):
        for batch in self.loader:
            count(images_read=len(batch["index"]) + len(batch["failed"]))
            yield batch


def thumbnails(images: torch.Tensor, mean, std, side: int) -> torch.Tensor:
    """Model inputs [B, C, H, W] -> the pixels the model saw, uint8 [B, C, s, s] (area-pooled to `side`, never
    enlarged): what the checks after the sweep read instead of decoding every file again (RUN_DIR/thumbs.npy)."""
    channels = images.shape[1]
    scale = torch.tensor(std[:channels], device=images.device).view(1, -1, 1, 1)
    shift = torch.tensor(mean[:channels], device=images.device).view(1, -1, 1, 1)
    pixels = images.float() * scale + shift
    height, width = images.shape[-2:]
    if max(height, width) > side:
        pixels = F.interpolate(pixels, size=(min(side, height), min(side, width)), mode="area")
    return (pixels * 255).round_().clamp_(0, 255).to(torch.uint8)


class _DecodedOnDevice:
    """A loader of EncodedJpegs whose batches arrive with their images decoded on the device."""

    def __init__(self, loader: DataLoader, dataset: AuditDataset, device: torch.device):
        self.loader, self.dataset, self.device = loader, dataset, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return (decode_on_device(batch, self.dataset, self.device) for batch in self.loader)


def metric_prefix(method: str, primary: str) -> str:
    """Columns of the primary method are plain (pred_iou); others carry the method (hirescam_pred_iou)."""
    return "" if method == primary else f"{method}_"


def audit_batch(
    model: nn.Module,
    layer: nn.Module,
    batch: dict,
    methods: Sequence[CamMethod],
    cfg: Config,
    reshape: ReshapeFn | None = None,
    geometry: MapGeometry | None = None,
) -> dict[str, np.ndarray]:
    """Everything the records need for one batch, computed on the model's device, copied to the host once."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    images = batch["image"].to(device, non_blocking=True)
    if uses_channels_last(device, cfg):
        images = images.contiguous(memory_format=torch.channels_last)
    masks = batch["mask"].to(device, non_blocking=True)
    has_mask = batch["has_mask"].to(device, non_blocking=True)
    labels = batch["label"].to(device, non_blocking=True)
    # Counterfactual cells come from the same gradients at no extra backward: kept at the layer's resolution, they
    # let auditor.evidence draw the findings' counterfactual maps without running the model again.
    cells = any(m.needs_gradients for m in methods) and all(m.name != "counterfactual" for m in methods)
    computed = [*methods, get_method("counterfactual")] if cells else methods
    pooled = {} if cfg.sweep.keep_features else None
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.sweep.amp):
        logits, maps = class_maps(model, layer, images, labels, computed, reshape, pooled=pooled)
    logits = logits.float()
    probs = logits.softmax(dim=1)
    p_pred, pred = probs.max(dim=1)
    p_true = probs.gather(1, labels[:, None])[:, 0]
    others = probs.scatter(1, labels[:, None], float("-inf"))
    fields: dict[str, torch.Tensor] = {
        "probs": probs,  # [B, C]: the whole vector, for label-error ranking over the run (probs.npy)
        "pred_idx": pred,
        "p_true": p_true,
        "p_pred": p_pred,
        "margin": p_true - others.max(dim=1).values,  # confident learning's margin: < 0 when wrong
        "loss": F.cross_entropy(logits, labels, reduction="none"),
    }
    if pooled is not None:
        fields["features"] = image_features(pooled["features"])  # [B, D]: the near-duplicate search's (features.npy)
    for metric in (m for m in metrics.METRICS if not m.per_map):
        fields[metric.name] = metric.function(MapView(None, None, masks, has_mask, cfg.attention))
    height, width = images.shape[-2:]
    size = cfg.sweep.map_size
    primary = methods[0].name
    for method in methods:
        raw = maps[method.name].float()  # [2, B, h, w]
        kinds, batch_size = raw.shape[:2]
        full = upsample(raw.flatten(0, 1), (height, width), geometry).unflatten(0, (kinds, batch_size))
        prefix = metric_prefix(method.name, primary)
        if method.name == primary:
            primary_pred_map = torch.nan_to_num(full[0], nan=0.0, posinf=0.0)
        for k, kind in enumerate(MAP_KINDS):
            view = MapView(full[k], raw[k], masks, has_mask, cfg.attention)
            for metric in (m for m in metrics.METRICS if m.per_map):
                fields[f"{prefix}{kind}_{metric.name}"] = metric.function(view)
        fields["maps" if method.name == primary else f"maps_{method.name}"] = small_maps(full, size)
    if cells:
        raw = torch.nan_to_num(maps["counterfactual"].float(), nan=0.0, posinf=0.0).transpose(0, 1)  # [B, 2, h, w]
        peak = raw.amax(dim=(2, 3), keepdim=True)  # scaled to 1 for float16; stored maps are scaled to 1 anyway
        fields[COUNTERFACTUAL_CELLS] = torch.where(peak > 0, raw / peak.clamp_min(1e-30), torch.zeros_like(raw))
    fields["masks"] = F.interpolate(masks[:, None].float(), size=(size, size), mode="area")[:, 0]
    if cfg.sweep.faithfulness:
        # Seeded by the batch's first sample, so a resumed run removes the same random pixels.
        generator = torch.Generator(device=device).manual_seed(cfg.sweep.seed + int(batch["index"][0]))
        fields["deletion_drop"], fields["random_drop"] = deletion_drops(
            model, images, primary_pred_map, pred, p_pred, cfg.sweep.faithfulness_top_percent, generator
        )
    return _to_host(fields)


def small_maps(full: torch.Tensor, size: int) -> torch.Tensor:
    """Upsampled maps [2, B, H, W] -> the stored maps [B, 2, S, S]: area-pooled, each scaled to a maximum of 1."""
    kinds, batch_size = full.shape[:2]
    finite = torch.nan_to_num(full, nan=0.0, posinf=0.0)
    small = F.interpolate(finite.flatten(0, 1)[:, None], size=(size, size), mode="area")
    small = small[:, 0].unflatten(0, (kinds, batch_size)).transpose(0, 1)  # [B, 2, S, S]
    peak = small.amax(dim=(2, 3), keepdim=True)
    return torch.where(peak > 0, small / peak.clamp_min(1e-30), torch.zeros_like(small))


def _to_host(fields: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """One device-to-host copy for the whole batch: pack every field into one float32 block, split on the host."""
    batch_size = next(iter(fields.values())).shape[0]
    flat = [value.reshape(batch_size, -1).float() for value in fields.values()]
    block = torch.cat(flat, dim=1).cpu().numpy()
    out, offset = {}, 0
    for (name, value), part in zip(fields.items(), flat):
        width = part.shape[1]
        array = block[:, offset: offset + width].reshape(value.shape)
        offset += width
        if name.startswith(ARRAY_FIELDS):
            array = array.astype(np.float16)
        elif name == "pred_idx":
            array = array.astype(np.int64)
        out[name] = array
    return out


def _rows(batch: dict, start: int, stop: int) -> dict:
    return {key: value[start:stop] if key in ("image", "mask", "has_mask", "label", "index") else value
            for key, value in batch.items()}


def audit_in_chunks(audit: Callable[[dict], dict], batch: dict, chunk: int) -> tuple[dict, int]:
    """Audit a batch in chunks of `chunk` images, halving the chunk on a CUDA out-of-memory error.

    Returns the batch's results and the chunk size that worked, which the rest of the run keeps.
    """
    size = len(batch["index"])
    while True:
        try:
            parts = [audit(_rows(batch, start, start + chunk)) for start in range(0, size, chunk)]
            break
        except torch.cuda.OutOfMemoryError:
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            log.warning("CUDA out of memory: going on with batches of %d images", chunk)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    merged = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return merged, chunk


def run_sweep(
    model: nn.Module,
    layer: nn.Module,
    dataset: AuditDataset,
    methods: Sequence[CamMethod],
    cfg: Config,
    writer: ShardWriter,
    device: torch.device,
    reshape: ReshapeFn | None = None,
    geometry: MapGeometry | None = None,
    indices: Sequence[int] | None = None,
) -> dict:
    """Sweep the samples not yet in finished shards; returns counts and timings."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    done = writer.done_until(indices[0]) if indices else 0
    todo = [i for i in indices if i >= done]
    if indices and done > indices[0]:
        log.info("resuming after %d finished samples", done - indices[0])
    batch_size = cfg.sweep.batch_size
    shard_batches = max(1, -(-cfg.sweep.shard_size // batch_size))
    loader = make_loader(dataset, todo, cfg, device)
    start_time = time.perf_counter()
    audited = skipped = 0
    shard_start = todo[0] if todo else done
    last_index = shard_start - 1
    batches_in_shard = 0
    chunk = batch_size  # shrinks for the rest of the run after a CUDA out-of-memory error
    progress = tqdm(total=len(todo), desc="audit", unit="img", disable=None, leave=False)
    with preserved_model_state(model):
        for batch in loader:
            count = len(batch["index"]) + len(batch["failed"])
            result = {"index": batch["index"].numpy(), "label_idx": batch["label"].numpy(),
                      "has_mask": batch["has_mask"].numpy(), "note": np.array(batch["note"], dtype=str)}
            if len(batch["index"]):
                fields, chunk = audit_in_chunks(
                    lambda part: audit_batch(model, layer, part, methods, cfg, reshape, geometry), batch, chunk
                )
                result.update(fields)
                thumbs = thumbnails(batch["image"], dataset.cfg.mean, dataset.cfg.std,
                                    cfg.sweep.keep_images_px or PROPERTY_SIDE).cpu().numpy()
                if cfg.sweep.keep_images_px > 0:
                    result["thumbs"] = thumbs
                result.update(thumb_properties(thumbs))  # prop_<name> records columns, from the pixels kept
                if "size" in batch:
                    result.update(file_properties(batch["size"]))
            result["failed_index"] = np.array([i for i, _ in batch["failed"]], dtype=np.int64)
            result["failed_reason"] = np.array([r for _, r in batch["failed"]], dtype=str)
            writer.add(result)
            audited += len(batch["index"])
            skipped += len(batch["failed"])
            last_index = max([last_index, *batch["index"].tolist(), *(i for i, _ in batch["failed"])])
            batches_in_shard += 1
            progress.update(count)
            if batches_in_shard == shard_batches:
                writer.flush(shard_start, last_index + 1)
                shard_start, batches_in_shard = last_index + 1, 0
        writer.flush(shard_start, last_index + 1)
    progress.close()
    seconds = time.perf_counter() - start_time
    return {"audited": audited, "skipped": skipped, "seconds": seconds,
            "images_per_s": (audited + skipped) / seconds if seconds > 0 else None}
