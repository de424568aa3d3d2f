"""Map cells placed at their receptive fields' centres: golden cases worked out by hand."""

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from auditor.geometry import MapGeometry, measure_geometry, upsample


def test_valid_convolutions_golden():
    # conv 5 (valid) -> pool 2 -> conv 5 (valid): cell i sees input pixels 2i ... 2i + 13, centred on 2i + 6.5.
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 5), nn.Flatten(), nn.Linear(256, 2))
    geometry = measure_geometry(model.eval(), model[3], torch.zeros(1, 1, 28, 28))
    assert geometry is not None
    for value, expected in ((geometry.scale_y, 2), (geometry.offset_y, 6.5), (geometry.scale_x, 2), (geometry.offset_x, 6.5)):
        assert abs(value - expected) < 1e-6


def test_same_padding_is_plain_and_resnet_stage_is_not():
    same = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1))
    assert measure_geometry(same.eval(), same[2], torch.zeros(1, 1, 32, 32)) is None
    # ResNet's stride-2 convolutions with padding put cell i of layer2 at pixel 8i, not at 8i + 3.5.
    resnet = torchvision.models.resnet18(weights=None).eval()
    geometry = measure_geometry(resnet, resnet.layer2, torch.zeros(1, 3, 64, 64))
    assert abs(geometry.scale_y - 8) < 1e-6 and abs(geometry.offset_y) < 1e-6


def test_upsample_plain_equals_bilinear_resize():
    maps = torch.rand(3, 4, 5)
    expected = F.interpolate(maps[:, None], size=(16, 20), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(upsample(maps, (16, 20), None), expected)
    torch.testing.assert_close(upsample(maps, (16, 20), MapGeometry.plain((4, 5), (16, 20))), expected)


def test_upsample_places_cells_and_leaves_the_uncovered_margin_empty():
    # Two cells per axis centred on pixels 2 and 4 (scale 2, offset 2) of an 8-pixel image.
    maps = torch.tensor([[[1.0, 3.0], [5.0, 7.0]]])
    out = upsample(maps, (8, 8), MapGeometry(2.0, 2.0, 2.0, 2.0))[0]
    assert out[2, 2] == 1.0 and out[2, 4] == 3.0 and out[4, 2] == 5.0 and out[4, 4] == 7.0
    assert out[3, 3] == 4.0  # bilinear midway between the four centres
    assert out[1, 2] == 1.0  # within half a cell of the first centre: held
    assert out[0].abs().sum() == 0 and out[:, 6:].abs().sum() == 0  # farther out: nothing


class OwnSizeOnly(nn.Module):
    """A network that refuses any input but its own size, as a torch.export program with static height and width."""

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        self.net, self.size = net, size

    def forward(self, x):
        if x.shape[-2:] != (self.size, self.size):
            raise RuntimeError(f"expected {self.size} x {self.size}, got {tuple(x.shape[-2:])}")
        return self.net(x)


def test_a_model_of_one_input_size_is_placed_by_one_cell_and_its_stride():
    # Same-padded, strides 2 and 2: cell i is centred on pixel 4i (not plain resizing's 4i + 1.5). The receptive
    # field (27 px) leaves one unclipped cell of the two the 32 px probe reads, so a model that takes other sizes
    # is measured on the larger strips, and one that does not by that cell and the stride 32 / 8: the same answer.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 7, 2, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 1, 1)).eval()
    free = measure_geometry(net, net[6], torch.zeros(1, 1, 32, 32))
    fixed = OwnSizeOnly(net, 32)
    own_size = measure_geometry(fixed, fixed.net[6], torch.zeros(1, 1, 32, 32))
    np.testing.assert_allclose(dataclasses.astuple(free), (4.0, 0.0, 4.0, 0.0), atol=1e-6)
    np.testing.assert_allclose(dataclasses.astuple(own_size), (4.0, 0.0, 4.0, 0.0), atol=1e-6)
