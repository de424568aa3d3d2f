"""Mask metrics: golden cases worked out by hand, and their invariants."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from auditor import attention
from auditor.sources import polygon_mask

MAP = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]])
BOX = torch.zeros(1, 4, 4, dtype=torch.bool)
BOX[0, :2, :2] = True
YES = torch.tensor([True])


def test_box_golden():
    # Mass 6, of which 4 inside the 2 x 2 box.
    assert math.isclose(attention.energy_in_mask(MAP, BOX, YES).item(), 4 / 6, rel_tol=1e-6)
    # The maximum (2.0) sits at (3, 3): outside the box, and outside it grown by 1 px, inside it grown by 2 px.
    assert attention.pointing_hit(MAP, BOX, YES, 0).item() == 0.0
    assert attention.pointing_hit(MAP, BOX, YES, 1).item() == 0.0
    assert attention.pointing_hit(MAP, BOX, YES, 2).item() == 1.0
    # map >= 0.5 * 2 keeps the four ones and the two: intersection 4, union 5.
    assert math.isclose(attention.iou(MAP, BOX, YES, 0.5).item(), 4 / 5, rel_tol=1e-6)
    # map >= 0.75 * 2 keeps only the two: intersection 0, union 5.
    assert attention.iou(MAP, BOX, YES, 0.75).item() == 0.0
    assert attention.mask_area(BOX, YES).item() == 4 / 16


def test_polygon_golden():
    # The triangle (0,0), (4,0), (0,4) rasterised on 5 x 5 covers the 15 pixels with x + y <= 4.
    mask = polygon_mask([np.array([[0, 0], [4, 0], [0, 4]])], 5, 5)
    ys, xs = np.mgrid[:5, :5]
    assert (mask == (xs + ys <= 4)).all()
    masks = torch.from_numpy(mask)[None]
    uniform = torch.ones(1, 5, 5)
    # An evenly spread map scores exactly the mask's area share.
    assert math.isclose(attention.energy_in_mask(uniform, masks, YES).item(), 15 / 25, rel_tol=1e-6)
    assert math.isclose(attention.mask_area(masks, YES).item(), 15 / 25, rel_tol=1e-6)
    peak = torch.zeros(1, 5, 5)
    peak[0, 4, 4] = 1.0  # the corner the triangle does not reach
    assert attention.pointing_hit(peak, masks, YES).item() == 0.0
    peak[0, 4, 0] = 2.0
    assert attention.pointing_hit(peak, masks, YES).item() == 1.0


def test_empty_mask_missing_mask_and_zero_map_give_nan():
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    for values in (
        attention.energy_in_mask(MAP, empty, YES),
        attention.pointing_hit(MAP, empty, YES),
        attention.iou(MAP, empty, YES),
        attention.energy_in_mask(MAP, BOX, torch.tensor([False])),
        attention.energy_in_mask(torch.zeros(1, 4, 4), BOX, YES),
        attention.pointing_hit(torch.zeros(1, 4, 4), BOX, YES),
        attention.energy_in_mask(torch.full((1, 4, 4), float("nan")), BOX, YES),
        attention.iou(torch.full((1, 4, 4), float("inf")), BOX, YES),
    ):
        assert torch.isnan(values).all()
    assert attention.mask_area(empty, YES).item() == 0.0
    assert torch.isnan(attention.mask_area(BOX, torch.tensor([False]))).all()


def test_batched_rows_are_independent():
    maps = torch.cat([MAP, torch.ones(1, 4, 4)])
    masks = torch.cat([BOX, BOX])
    energy = attention.energy_in_mask(maps, masks, torch.tensor([True, True]))
    torch.testing.assert_close(energy, torch.tensor([4 / 6, 4 / 16]))


# No subnormals: scaling one by a fraction underflows to 0, a different (empty) map, not the same map scaled.
maps_strategy = arrays(np.float32, (6, 6), elements=st.floats(0, 100, width=32, allow_subnormal=False))
masks_strategy = arrays(np.bool_, (6, 6))


@settings(max_examples=60, deadline=None)
@given(maps_strategy, masks_strategy, st.floats(0.01, 1000))
def test_energy_invariants(map_values, mask_values, scale):
    maps = torch.from_numpy(map_values)[None]
    masks = torch.from_numpy(mask_values)[None]
    energy = attention.energy_in_mask(maps, masks, YES).item()
    if not mask_values.any() or map_values.max() <= 0:
        assert math.isnan(energy)
        return
    assert 0.0 <= energy <= 1.0
    scaled = attention.energy_in_mask(maps * scale, masks, YES).item()
    assert math.isclose(energy, scaled, rel_tol=1e-4, abs_tol=1e-6)
    full = attention.energy_in_mask(maps, torch.ones_like(masks), YES).item()
    assert math.isclose(full, 1.0, rel_tol=1e-9)
