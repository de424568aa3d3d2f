"""Global image properties (brightness, colour cast, sharpness, ...) and the test of whether the model uses them.

A class photographed brighter, bluer, blurrier, smaller or in greyscale is a shortcut no heatmap can point at: the
cue covers the whole image, so the attention spreads. The sweep measures each property per image from the pixels
it keeps anyway (its thumbs, area-pooled to at most 64 px; no second decode) and from the decoder (the file's size
and aspect ratio), as records columns prop_<name>. The rule `auditor.findings.property_shortcut` flags a class
whose property departs from the other classes'; `property_check` then edits the property on the model's inputs,
against a control edit of the same size that leaves the property alone, and counts predictions that change.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from auditor.property_names import COLUMN, PIXEL_PROPERTIES
from auditor.timing import stage

log = logging.getLogger("auditor")

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B
GREY_TOLERANCE = 2 / 255  # channels this close everywhere: a greyscale image (JPEG noise stays below it)
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def luma(pixels: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [0, 1] -> [B, H, W]; a one-channel image is its own luma."""
    if pixels.shape[1] != 3:
        return pixels.mean(dim=1)
    return torch.einsum("bchw,c->bhw", pixels, torch.tensor(LUMA, dtype=pixels.dtype, device=pixels.device))


def property_maps(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The properties that are a mean over the pixels, per pixel [B, H, W] of pixels [B, C, H, W] in [0, 1]:
    brightness (luma); for three channels also colour cast, the opponent channels R - G and (R + G) / 2 - B, and
    the HSV saturation (max - min) / max. Measured on part of an image (its background) they say where a
    property lies."""
    pixels = pixels.float()
    out = {"brightness": luma(pixels)}
    if pixels.shape[1] == 3:
        r, g, b = pixels.unbind(dim=1)
        top, bottom = pixels.amax(dim=1), pixels.amin(dim=1)
        out["cast_rg"] = r - g
        out["cast_yb"] = (r + g) / 2 - b
        out["saturation"] = torch.where(top > 0, (top - bottom) / top.clamp_min(1e-12), 0.0)
    return out


def pixel_properties(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each of PIXEL_PROPERTIES per image [B] of pixels [B, C, H, W] in [0, 1]: the image means of
    `property_maps`; contrast the luma's standard deviation; sharpness the variance of the 4-neighbour Laplacian of
    the luma (valid cells only); greyscale 1 where the channels agree everywhere. One-channel images: no cast, no
    saturation, greyscale."""
    pixels = pixels.float()
    maps = property_maps(pixels)
    out = {name: values.mean(dim=(1, 2)) for name, values in maps.items()}
    y = maps["brightness"]  # the luma
    out["contrast"] = y.flatten(1).std(dim=1, unbiased=False)
    if pixels.shape[1] == 3:
        top, bottom = pixels.amax(dim=1), pixels.amin(dim=1)
        out["greyscale"] = ((top - bottom).flatten(1).amax(dim=1) <= GREY_TOLERANCE).float()
    else:
        zero = torch.zeros_like(out["brightness"])
        out.update(cast_rg=zero, cast_yb=zero, saturation=zero, greyscale=torch.ones_like(zero))
    if min(y.shape[-2:]) >= 3:
        edges = F.conv2d(y[:, None], LAPLACIAN.to(y)[None, None])
        out["sharpness"] = edges.flatten(1).var(dim=1, unbiased=False)
    else:
        out["sharpness"] = torch.zeros_like(out["brightness"])
    return {name: out[name] for name in PIXEL_PROPERTIES}


def thumb_properties(thumbs: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """uint8 thumbs [B, C, s, s] -> records columns prop_<name> (float32 [B])."""
    pixels = torch.as_tensor(np.asarray(thumbs)).float() / 255.0
    return {COLUMN + name: value.numpy().astype(np.float32) for name, value in pixel_properties(pixels).items()}


def file_properties(sizes: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Decoded (upright) sizes [B, 2] as (width, height) -> prop_size (sqrt of the pixel count: a side) and
    prop_aspect (width / height)."""
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    width, height = sizes[:, 0], sizes[:, 1]
    return {COLUMN + "size": np.sqrt(width * height).astype(np.float32),
            COLUMN + "aspect": np.where(height > 0, width / np.maximum(height, 1), 0).astype(np.float32)}


# ---- the edits: move one property of pixels [B, C, H, W] in [0, 1] from `source` toward `target` ----

def _box_blur(pixels: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(pixels, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def _with_luma_kept(pixels: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Add a per-channel shift [C], less its luma, so that a colour-cast edit leaves the brightness alone."""
    shift = shift - (shift * torch.tensor(LUMA, dtype=shift.dtype)).sum()
    return pixels + shift.to(pixels)[None, :, None, None]


def shift_property(name: str, pixels: torch.Tensor, source: float, target: float) -> torch.Tensor:
    """The pixels with property `name` moved by the difference (additive properties) or ratio (contrast,
    saturation, sharpness) between the class means `source` and `target`, clamped to [0, 1]. Greyscale can only
    be taken away from colour (to the luma); the reverse edit leaves the pixels as they are."""
    delta = target - source
    ratio = target / source if source > 0 else 1.0
    colour = pixels.shape[1] == 3
    y = luma(pixels)[:, None]
    if name == "brightness":
        out = pixels + delta
    elif name == "contrast":
        mean = y.mean(dim=(2, 3), keepdim=True)
        out = mean + (pixels - mean) * ratio
    elif name == "cast_rg" and colour:
        out = _with_luma_kept(pixels, torch.tensor([delta / 2, -delta / 2, 0.0]))
    elif name == "cast_yb" and colour:
        out = _with_luma_kept(pixels, torch.tensor([delta / 3, delta / 3, -2 * delta / 3]))
    elif name == "saturation" and colour:
        out = y + (pixels - y) * ratio
    elif name == "sharpness":
        # The Laplacian scales by about (1 - a) blending toward a 3x3 box blur, by (1 + k) unsharp masking: its
        # variance by the square.
        amount = float(np.sqrt(max(ratio, 0.0)))
        out = pixels + (pixels - _box_blur(pixels)) * (amount - 1.0) if amount >= 1 else (
            amount * pixels + (1 - amount) * _box_blur(pixels))
    elif name == "greyscale" and colour and delta > 0:
        out = y.expand_as(pixels)
    else:
        out = pixels
    return out.clamp(0.0, 1.0)


def control_edit(pixels: torch.Tensor, edited: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The control: smooth random noise (4 x 4 cells, bilinear) of the edit's size per image (root-mean-square),
    zero-mean in each channel, so it moves neither brightness nor colour cast, and barely sharpness."""
    batch, channels, height, width = pixels.shape
    noise = torch.randn(batch, channels, 4, 4, generator=generator)
    noise = F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False).to(pixels)
    noise = noise - noise.mean(dim=(2, 3), keepdim=True)
    size = (edited - pixels).flatten(1).pow(2).mean(dim=1).sqrt()
    noise = noise * (size / noise.flatten(1).pow(2).mean(dim=1).sqrt().clamp_min(1e-12))[:, None, None, None]
    return (pixels + noise).clamp(0.0, 1.0)


# ---- the model-use test ----

def _predict(model, pixels: torch.Tensor, mean, std, device) -> torch.Tensor:
    channels = pixels.shape[1]
    m = torch.tensor(mean[:channels], dtype=pixels.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std[:channels], dtype=pixels.dtype).view(1, -1, 1, 1)
    with torch.no_grad():
        return model(((pixels - m) / s).to(device)).argmax(dim=1).cpu()


def changed_predictions(model, loader, edits: dict[str, tuple[float, float]], target_class: int, mean, std,
                        device, seed: int, leaving: bool,
                        predictions: dict[int, int] | None = None) -> dict[str, tuple[float, float, int]]:
    """Per property in `edits` (name -> (source, target) means), over the loader's images: the share whose
    prediction crosses the class boundary when the property moves from source to target, the share that crosses
    under the control edit of the same size, and how many images counted. leaving: count images predicted as the
    class that stop being it (the class's own images, normalised); else images not predicted as it that become it
    (other classes' images, shifted). Every property is tested on the same images, read once. predictions
    (dataset index -> the sweep's predicted class) spare running the model on the unedited images again."""
    generator = torch.Generator().manual_seed(seed)
    crossed, controlled, counted = dict.fromkeys(edits, 0), dict.fromkeys(edits, 0), 0
    for batch in loader:
        if not len(batch["index"]):
            continue
        images = batch["image"].float().cpu()
        shape = (1, images.shape[1], 1, 1)
        pixels = images * torch.tensor(std[: shape[1]]).view(shape) + torch.tensor(mean[: shape[1]]).view(shape)
        if predictions is None:
            before = _predict(model, pixels, mean, std, device) == target_class
        else:
            before = torch.tensor([predictions[int(i)] == target_class for i in batch["index"]], dtype=torch.bool)
        eligible = before if leaving else ~before
        counted += int(eligible.sum())
        for name, (source, target) in edits.items():
            edited = shift_property(name, pixels, source, target)
            after = _predict(model, edited, mean, std, device) == target_class
            control = _predict(model, control_edit(pixels, edited, generator), mean, std, device) == target_class
            crossed[name] += int((eligible & (after != before)).sum())
            controlled[name] += int((eligible & (control != before)).sum())
    return {name: (crossed[name] / max(counted, 1), controlled[name] / max(counted, 1), counted) for name in edits}


def _sample(labels: np.ndarray, mask: np.ndarray, size: int, seed: list[int]) -> list[int]:
    pool = np.flatnonzero(mask)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(pool, size=min(size, len(pool)), replace=False).tolist()) if len(pool) else []


def property_check(findings: list, model, dataset, classes: list[str], device, cfg, make_loader,
                   notes: list[str] | None = None, audited: int | None = None,
                   predictions: dict[int, int] | None = None) -> list:
    """Test the property_shortcut findings on the model, within the run's budget: at most
    findings.check_max_classes classes (most departing first), each on findings.property_images of its images
    (every pixel property it departs on normalised to the other classes' mean) and as many other classes' images
    (shifted to the class's mean), seeded, read once through the sweep's loader. Each tested finding is re-judged
    on the property the model reacts to most (`property_shortcut.judged`). On a small run of `audited` images the
    classes tested stop where their forwards would pass RUN_SHARE of the run (the first is always tested).
    make_loader: `auditor.sweep`'s (which
    imports this module for the properties it measures, so the rule's imports wait until here); predictions: the
    sweep's (dataset index -> predicted class), for the images as they are (only audited images are sampled)."""
    from auditor.budget import classes_in_budget, sampling_note, share_of_run  # noqa: PLC0415
    from auditor.findings.property_shortcut import KIND, judged  # noqa: PLC0415

    fc = cfg.findings
    candidates = [f for f in findings if f.kind == KIND.name and departing(f)]
    candidates.sort(key=lambda f: -abs(f.metrics.get("effect", 0.0)))
    index = {name: i for i, name in enumerate(classes)}
    chosen = classes_in_budget([index[f.classes[0]] for f in candidates], len(classes), fc.check_max_classes,
                               fc.seed, fill=False)
    chosen = affordable_classes(chosen, {index[f.classes[0]]: f for f in candidates}, fc.property_images,
                                share_of_run(None, len(dataset) if audited is None else audited, "property_check"))
    if not chosen:
        return findings
    labels = np.array([s.label for s in dataset.samples])
    audited_only = np.zeros(len(labels), dtype=bool)
    if predictions is None:
        audited_only[:] = True
    else:
        audited_only[list(predictions)] = True
    mean, std = dataset.cfg.mean, dataset.cfg.std
    out = list(findings)
    with stage("property_check_s"):
        for f in (f for f in candidates if index[f.classes[0]] in chosen):
            target = index[f.classes[0]]
            means = departing(f)  # name -> (class mean, other classes' mean)
            own = _sample(labels, audited_only & (labels == target), fc.property_images, [fc.seed, target, 11])
            other = _sample(labels, audited_only & (labels != target), fc.property_images, [fc.seed, target, 12])
            lost = changed_predictions(model, make_loader(dataset, own, cfg, device),
                                       {n: (a, b) for n, (a, b) in means.items()}, target, mean, std, device,
                                       fc.seed, leaving=True, predictions=predictions)
            gained = changed_predictions(model, make_loader(dataset, other, cfg, device),
                                         {n: (b, a) for n, (a, b) in means.items()}, target, mean, std, device,
                                         fc.seed + 1, leaving=False, predictions=predictions)
            figures = {n: {"normalised_lost": lost[n][0], "normalised_lost_control": lost[n][1],
                           "normalised_n": lost[n][2], "shifted_gained": gained[n][0],
                           "shifted_gained_control": gained[n][1], "shifted_n": gained[n][2]} for n in means}
            out[out.index(f)] = judged(f, figures, fc)
    if notes is not None:
        note = sampling_note("Property check", len(chosen), len(candidates),
                             "check_max_classes and auditor.budget.RUN_SHARE")
        notes.extend(n for n in [note] if n)
    log.info("property check on %d classes", len(chosen))
    return out


def affordable_classes(chosen: list[int], finding_of: dict, images: int, allowance: int) -> list[int]:
    """The first of `chosen` whose tests fit in `allowance` forwards (the first always): a class costs its images
    and as many others', each run, per property it departs on, edited and under the control edit (the images as
    they are were run by the sweep)."""
    from auditor.budget import affordable  # noqa: PLC0415 - as in property_check

    return chosen[: affordable((2 * images * 2 * len(departing(finding_of[target])) for target in chosen), allowance)]


def departing(f) -> dict[str, tuple[float, float]]:
    """The pixel properties a property_shortcut finding's class departs on: name -> (class mean, others' mean)."""
    return {name: (f.metrics[f"{name}_class_mean"], f.metrics[f"{name}_rest_mean"]) for name in PIXEL_PROPERTIES
            if f"{name}_class_mean" in f.metrics and f"{name}_rest_mean" in f.metrics}
