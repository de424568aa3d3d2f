"""Where each cell of the target layer's map sits in the input, so maps are upsampled onto the right pixels.

Plain resizing assumes cell i of an n-cell map covers input pixels [i*H/n, (i+1)*H/n): true for same-padded
networks, wrong for valid convolutions, which look at a shrunken central field (LeNet's 8 x 8 conv_2 cells are
centred on pixels 6.5 ... 20.5 of a 28-pixel input, not spread over all 28). `measure_geometry` finds each cell's
receptive field from the support of its input gradient, once per run; `upsample` places the cells there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from auditor.hooks import forward_hook


class _Stop(Exception):
    """Raised by the probe hook: nothing after the target layer needs to run."""


@dataclass(frozen=True)
class MapGeometry:
    """Cell i of the map is centred on input pixel scale * i + offset (per axis, pixel k's centre is k)."""

    scale_y: float
    offset_y: float
    scale_x: float
    offset_x: float

    @staticmethod
    def plain(cells: tuple[int, int], size: tuple[int, int]) -> MapGeometry:
        """The mapping plain bilinear resizing (half-pixel centres) assumes."""
        sy, sx = size[0] / cells[0], size[1] / cells[1]
        return MapGeometry(sy, (sy - 1) / 2, sx, (sx - 1) / 2)

    def is_plain(self, cells: tuple[int, int], size: tuple[int, int]) -> bool:
        """Within half a pixel and 2 % of the plain mapping: max-pooling makes the measured support a little
        narrower than the receptive field, and such small differences are not worth leaving plain resizing for."""
        ref = MapGeometry.plain(cells, size)
        return (abs(self.scale_y - ref.scale_y) <= 0.02 * ref.scale_y and abs(self.offset_y - ref.offset_y) <= 0.5
                and abs(self.scale_x - ref.scale_x) <= 0.02 * ref.scale_x and abs(self.offset_x - ref.offset_x) <= 0.5)


def upsample(maps: torch.Tensor, size: tuple[int, int], geometry: MapGeometry | None = None) -> torch.Tensor:
    """Maps [N, h, w] -> [N, H, W], bilinear, each cell's value at its receptive field's centre."""
    cells = tuple(maps.shape[-2:])
    if geometry is None or geometry.is_plain(cells, size):
        return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    height, width = size
    ys = (torch.arange(height, device=maps.device, dtype=maps.dtype) - geometry.offset_y) / geometry.scale_y
    xs = (torch.arange(width, device=maps.device, dtype=maps.dtype) - geometry.offset_x) / geometry.scale_x
    # grid_sample with align_corners=True: -1 and +1 are the centres of the first and the last cell.
    gy = 2 * ys / max(cells[0] - 1, 1) - 1
    gx = 2 * xs / max(cells[1] - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
    grid = grid[None].expand(maps.shape[0], -1, -1, -1)
    values = F.grid_sample(maps[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]
    # Like plain resizing, hold the edge cells' values for half a cell beyond their centres; farther out (the
    # margin a valid convolution never centres a cell on) there is no attention to place.
    covered = ((ys >= -0.5) & (ys <= cells[0] - 0.5))[:, None] & ((xs >= -0.5) & (xs <= cells[1] - 0.5))[None, :]
    return values * covered


def _fit(centres: list[tuple[int, float]]) -> tuple[float, float] | None:
    if len(centres) < 2:
        return None
    cells, pixels = np.array(centres, dtype=np.float64).T
    scale, offset = np.polyfit(cells, pixels, 1)
    return float(scale), float(offset)


def measure_geometry(model: nn.Module, layer: nn.Module, example: torch.Tensor, reshape=None) -> MapGeometry | None:
    """Fit cell -> pixel centres from cells whose receptive field lies inside the probe; None means plain.

    Receptive fields of deep networks often exceed the image, so a probe 3x larger follows when the first one
    finds fewer than two unclipped cells; the forward stops at the target layer, so the head never sees that
    size. The larger probe is one strip per axis, long along that axis only: a cell's support along one axis
    does not depend on the image's extent along the other, and two strips cost a fraction of the 3x square
    (resnet18 at 224 px: the model-load stage fell from about 10 s to 2 s on a 2-core CPU). A model that cannot
    be probed keeps plain resizing. A model that takes only its own input size (a torch.export program with a
    static height and width) cannot take the strips: there one unclipped cell and the stride (image size / cells,
    as in same-padded networks) place the map, so that a module and its exported program get the same geometry.
    """
    _, channels, height, width = example.shape
    store: dict = {}

    def hook(module, inputs, output):
        store["output"] = output
        raise _Stop

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with forward_hook(layer, hook):
            own_cells, fits, centres = _measure(model, store, reshape, (channels, height, width), device)
            for axis in (0, 1):
                if fits[axis] is None:
                    try:
                        fits[axis] = _strip_fit(model, store, reshape, (channels, height, width), axis, device)
                    except Exception:  # noqa: BLE001 - only its own input size: one cell and the stride
                        fits[axis] = _stride_fit(centres[axis], own_cells[axis], (height, width)[axis])
    except Exception:  # noqa: BLE001 - a model we cannot probe keeps plain resizing
        return None
    if None in fits:
        return None
    geometry = MapGeometry(*fits[0], *fits[1])
    return None if geometry.is_plain(own_cells, (height, width)) else geometry


def _stride_fit(centres: list[tuple[int, float]], cells: int, extent: int) -> tuple[float, float] | None:
    """(scale, offset) from one unclipped cell's centre, the scale being the stride extent / cells."""
    if len(centres) != 1:
        return None
    (cell, pixel), scale = centres[0], extent / cells
    return scale, pixel - scale * cell


def _measure(model, store, reshape, shape, device):
    """Cells of the probe's map, (scale, offset) per axis from two neighbouring cells on the diagonal at the
    middle (None for an axis where either is clipped), and the unclipped cells' centres per axis: one forward and
    one backward for both axes."""
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, *shape, generator=generator).to(device).repeat(2, 1, 1, 1).requires_grad_(True)
    with torch.enable_grad():
        out = _probe_features(model, store, probe, reshape)
        rows, cols = out.shape[2:]
        picked = [(min(max(rows // 2 + d, 0), rows - 1), min(max(cols // 2 + d, 0), cols - 1)) for d in (0, 1)]
        select = torch.zeros_like(out)
        for k, (i, j) in enumerate(picked):
            select[k, :, i, j] = 1
        (grad,) = torch.autograd.grad((out * select).sum(), probe)
    energy = grad.abs().sum(dim=1)  # [2, H, W]
    unclipped = []
    for axis in (0, 1):
        profile = energy.sum(dim=2 - axis)  # axis 0: sum over x -> a profile along y
        extent = shape[1 + axis]
        centres = []
        for k, cell in enumerate(picked):
            support = torch.nonzero(profile[k] > 0).flatten()
            if len(support) and support[0] > 0 and support[-1] < extent - 1:
                centres.append((cell[axis], (support[0].item() + support[-1].item()) / 2))
        unclipped.append(sorted(set(centres)))
    return (rows, cols), [_fit(centres) for centres in unclipped], unclipped


def _strip_fit(model, store, reshape, shape, axis, device, factor=3):
    """(scale, offset) along `axis` from a probe `factor` times longer along it: a quarter as wide across it
    where the model takes that (the strip's cost is its area), else as wide as the image."""
    for narrow in (4, 1):
        strip = list(shape)
        strip[1 + axis] *= factor
        strip[2 - axis] = max(1, strip[2 - axis] // narrow)
        try:
            _, fits, _ = _measure(model, store, reshape, tuple(strip), device)
        except Exception:  # noqa: BLE001 - too narrow for this model: try the image's own width
            if narrow == 1:
                raise
            continue
        return fits[axis]
    return None


def _probe_features(model, store, probe, reshape):
    store.clear()
    try:
        model(probe)
    except _Stop:
        pass
    output = store["output"]
    return reshape(output) if reshape else output
