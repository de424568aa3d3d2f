"""The deletion check: golden values on a model whose answer is known by hand, and its wiring into the sweep."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from auditor.cams import get_method, preserved_model_state
from auditor.config import Config, load_config
from auditor.errors import ConfigError
from auditor.faithfulness import class_means, deletion_drops, deletion_masks
from auditor.sweep import audit_batch


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


class SumModel(nn.Module):
    """logits = [scale * (sum of the pixels), 0]: p(class 0) = sigmoid(scale * sum), known by hand after a deletion."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.feat = nn.Identity()

    def forward(self, x):
        total = self.scale * self.feat(x).sum(dim=(1, 2, 3))
        return torch.stack([total, torch.zeros_like(total)], dim=1)


def _probability(model, images):
    return model(images).softmax(dim=1)[:, 0]


def test_deletion_of_the_object_golden():
    # A 4 x 4 image whose top-left 2 x 2 block is 1: logit 0.5 * 4 = 2. The map is the image itself, and 25 % of
    # 16 pixels is exactly the block: deleting it leaves logit 0, p = 0.5. Random deletion removes j of the block's
    # pixels for some j in 0..4: p = sigmoid(0.5 * (4 - j)).
    image = torch.zeros(1, 1, 4, 4)
    image[..., :2, :2] = 1
    model = SumModel(0.5)
    p = _probability(model, image)
    deletion, random = deletion_drops(model, image, image[:, 0], torch.tensor([0]), p, 25.0,
                                      torch.Generator().manual_seed(0))
    assert deletion.item() == pytest.approx(sigmoid(2) - 0.5, abs=1e-6)
    possible = [sigmoid(2) - sigmoid(0.5 * (4 - j)) for j in range(5)]
    assert min(abs(random.item() - value) for value in possible) < 1e-6
    assert random.item() <= deletion.item() + 1e-6


def test_uniform_image_loses_the_same_under_either_deletion():
    # All 16 pixels are 1: logit 0.1 * 16 = 1.6. Removing any 4 leaves 1.2, wherever the map points.
    image = torch.ones(2, 1, 4, 4)
    maps = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(1))
    model = SumModel(0.1)
    deletion, random = deletion_drops(model, image, maps, torch.tensor([0, 0]), _probability(model, image), 25.0)
    expected = sigmoid(1.6) - sigmoid(1.2)
    np.testing.assert_allclose(deletion.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(random.numpy(), expected, rtol=1e-5)


def test_masks_cover_the_top_pixels_and_as_many_random_ones():
    maps = torch.tensor([[[0.0, 5.0], [3.0, 1.0]], [[9.0, 0.0], [0.0, 8.0]]])
    top, random = deletion_masks(maps, 50.0, torch.Generator().manual_seed(0))
    assert top.tolist() == [[[False, True], [True, False]], [[True, False], [False, True]]]
    assert random.sum(dim=(1, 2)).tolist() == [2, 2]
    # Never fewer than one pixel.
    top, random = deletion_masks(maps, 1.0)
    assert top.sum(dim=(1, 2)).tolist() == [1, 1] and random.sum(dim=(1, 2)).tolist() == [1, 1]


def test_a_blank_map_has_no_deletion_drop():
    image = torch.ones(1, 1, 4, 4)
    model = SumModel(0.1)
    deletion, random = deletion_drops(model, image, torch.zeros(1, 4, 4), torch.tensor([0]), _probability(model, image),
                                      25.0)
    assert math.isnan(deletion.item()) and not math.isnan(random.item())


def test_class_means_golden():
    records = pd.DataFrame({"label_idx": [0, 0, 2, 2], "deletion_drop": [0.2, 0.4, np.nan, 0.1],
                            "random_drop": [0.0, 0.1, 0.05, 0.15]})
    means = class_means(records, ["a", "b", "c"])
    np.testing.assert_allclose(means["mean_deletion_drop"], [0.3, np.nan, 0.1])
    np.testing.assert_allclose(means["mean_random_drop"], [0.05, np.nan, 0.1])


def _batch(first_index):
    image = torch.zeros(2, 1, 4, 4)
    image[0, :, :2, :2] = 1
    image[1, :, 2:, 2:] = 2
    return {"image": image, "mask": torch.zeros(2, 4, 4, dtype=torch.bool), "has_mask": torch.tensor([False, False]),
            "label": torch.tensor([0, 1]), "index": torch.tensor([first_index, first_index + 1])}


def test_sweep_step_uses_the_primary_map_and_is_reproducible():
    # HiResCAM of SumModel at its identity layer is ReLU(scale * x): the image itself, so deletion of the top 25 %
    # removes each image's object exactly (sum 4 and 8 -> logits 2 and 4 -> p = 0.5 after deletion).
    model = SumModel(0.5)
    cfg = Config()
    cfg.sweep.methods, cfg.sweep.map_size = ["hirescam"], 4
    cfg.sweep.faithfulness, cfg.sweep.faithfulness_top_percent = True, 25.0
    with preserved_model_state(model):
        first = audit_batch(model, model.feat, _batch(0), [get_method("hirescam")], cfg)
        again = audit_batch(model, model.feat, _batch(0), [get_method("hirescam")], cfg)
    np.testing.assert_allclose(first["deletion_drop"], [sigmoid(2) - 0.5, sigmoid(4) - 0.5], rtol=1e-5)
    np.testing.assert_array_equal(first["random_drop"], again["random_drop"])
    cfg.sweep.faithfulness = False
    with preserved_model_state(model):
        assert "deletion_drop" not in audit_batch(model, model.feat, _batch(0), [get_method("hirescam")], cfg)


def test_config_fields():
    cfg = load_config(overrides=["sweep.faithfulness=true", "sweep.faithfulness_top_percent=5"])
    assert cfg.sweep.faithfulness is True and cfg.sweep.faithfulness_top_percent == 5.0
    with pytest.raises(ConfigError, match="faithfulness_top_percent"):
        load_config(overrides=["sweep.faithfulness_top_percent=0"])
