"""Every torchvision family: the target layer is found, its output read as a map, and the sweep runs on it."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vgg import VGG, make_layers
from torchvision.models.vision_transformer import VisionTransformer

from auditor.architectures import ChannelsLast, TokensToGrid, grid_shape, layer_reshape, prefix_tokens
from auditor.cams import METHODS, class_maps, get_method, preserved_model_state
from auditor.cli import main
from auditor.errors import AuditorError
from auditor.models import find_target_layer


def tiny_vit(num_classes: int = 3, image_size: int = 32) -> nn.Module:
    """A one-block ViT; torchvision zeroes the head, so it gets random weights (a zero head explains nothing)."""
    torch.manual_seed(0)
    model = VisionTransformer(image_size=image_size, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=num_classes)
    nn.init.normal_(model.heads.head.weight)
    return model


def tiny_swin(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=[4, 4],
                           num_classes=num_classes)


# family: (builder, input size, expected target layer, expected reshape type, grid at that size, CAM applies).
# Small configurations of the family's own class where the named models are slow to build.
FAMILIES = {
    "resnet": (lambda: torchvision.models.resnet18(num_classes=3), 64, "layer4", None, (2, 2), True),
    "vgg": (lambda: VGG(make_layers([16, "M", 32, "M", 512, "M"]), num_classes=3, init_weights=False), 64,
            "features", None, (8, 8), False),  # an MLP head; the AdaptiveAvgPool2d(7) would resample 8 x 8 to 7 x 7
    "densenet": (lambda: torchvision.models.DenseNet(8, (2, 2), 16, num_classes=3), 64, "features", None, (8, 8),
                 False),  # ReLU between the features and the pool
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=3, width_mult=0.25), 64, "features", None,
                     (2, 2), True),
    "mobilenet_v3": (lambda: torchvision.models.mobilenet_v3_small(num_classes=3), 64, "features", None, (2, 2),
                     False),  # Linear -> Hardswish -> Linear head
    "efficientnet": (lambda: torchvision.models.efficientnet_b0(num_classes=3), 64, "features", None, (2, 2), True),
    "convnext": (lambda: ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=3), 64,
                 "features", None, (8, 8),
                 False),  # LayerNorm after the pool
    "regnet": (lambda: torchvision.models.regnet_y_400mf(num_classes=3), 64, "trunk_output", None, (2, 2), True),
    "vit": (tiny_vit, 32, "encoder.layers.encoder_layer_0.ln_1", TokensToGrid, (4, 4), False),  # class token head
    "swin": (tiny_swin, 32, "norm", ChannelsLast, (4, 4), True),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_target_layer_reshape_and_every_method(family):
    build, size, layer_name, reshape_type, grid, cam_applies = FAMILIES[family]
    model = build().eval()
    torch.manual_seed(1)
    images = torch.randn(2, 3, size, size)
    name, layer = find_target_layer(model, images[:1])
    assert name == layer_name
    reshape = layer_reshape(model, name, layer, images[:1])
    assert type(reshape) is type(None) if reshape_type is None else isinstance(reshape, reshape_type)
    methods = [get_method(m) for m in METHODS if m != "cam"]
    labels = torch.tensor([0, 2])
    with preserved_model_state(model):
        logits, maps = class_maps(model, layer, images, labels, methods, reshape)
        with torch.no_grad():
            assert torch.allclose(logits, model(images), atol=1e-5)  # the hook left the forward unchanged
        if cam_applies:
            _, cam = class_maps(model, layer, images, labels, [get_method("cam"), get_method("gradcam")], reshape)
            cells = grid[0] * grid[1]
            tolerance = 1e-6 * cam["cam"].amax().item()
            torch.testing.assert_close(cam["cam"], cam["gradcam"] * cells, rtol=1e-4, atol=tolerance)
        else:
            with pytest.raises(AuditorError, match="global average pooling"):
                class_maps(model, layer, images, labels, [get_method("cam")], reshape)
    for method, values in maps.items():
        assert values.shape == (2, 2, *grid), method
        assert torch.isfinite(values).all(), method
    # Gradients reached the target layer: the maps of the methods that keep every positive term are not all zero.
    assert maps["layercam"].amax() > 0 and maps["gradcampp"].amax() > 0


# ---------------------------------------------------------------- token and channels-last reshapes, by hand


def test_grid_from_token_count_and_aspect():
    assert grid_shape(196, (1, 1)) == (14, 14)
    assert grid_shape(16, (1, 1)) == (4, 4)
    assert grid_shape(50, (2, 1)) == (10, 5)  # a 2:1 input: h = 2k, w = k, 2k^2 = 50
    with pytest.raises(AuditorError, match="do not form a grid"):
        grid_shape(12, (1, 1))
    assert prefix_tokens(197, (1, 1)) == 1  # ViT-B/16 at 224: class token + 14 x 14
    assert prefix_tokens(198, (1, 1)) == 2  # DeiT: class and distillation tokens
    assert prefix_tokens(49, (1, 1)) == 0  # no class token
    with pytest.raises(AuditorError, match="not a patch grid"):
        prefix_tokens(3, (2, 3))


def test_tokens_to_grid_golden():
    # 1 class token + a 2 x 3 grid of patches with 2 channels; patch p (row-major) holds (p, -p).
    patches = torch.tensor([[p, -p] for p in range(6)], dtype=torch.float32)
    tokens = torch.cat([torch.full((1, 2), 99.0), patches])[None]  # [1, 7, 2]
    grid = TokensToGrid(prefix=1, aspect=(2, 3))(tokens)
    # aspect 2:3 -> h = 2, w = 3
    torch.testing.assert_close(grid[0, 0], torch.tensor([[0.0, 1, 2], [3, 4, 5]]))
    torch.testing.assert_close(grid[0, 1], -grid[0, 0])


def test_channels_last_golden():
    x = torch.arange(12.0).reshape(1, 2, 3, 2)  # [B, H, W, C]
    y = ChannelsLast()(x)
    assert y.shape == (1, 2, 2, 3)
    assert y[0, 1, 0, 2].item() == x[0, 0, 2, 1].item()


def test_vit_grid_follows_the_token_count_not_a_fixed_size():
    for image_size, grid in ((32, (4, 4)), (48, (6, 6))):
        model = tiny_vit(image_size=image_size).eval()
        example = torch.randn(1, 3, image_size, image_size)
        name, layer = find_target_layer(model, example)
        with preserved_model_state(model):
            _, maps = class_maps(model, layer, example, torch.tensor([0]), [get_method("gradcam")],
                                 layer_reshape(model, name, layer, example))
        assert maps["gradcam"].shape[-2:] == grid


# ---------------------------------------------------------------- transformers against pytorch-grad-cam


def _vit_reshape(tensor):
    """pytorch-grad-cam's documented ViT reshape_transform, for a 4 x 4 grid."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), 4, 4, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def _swin_reshape(tensor):
    return tensor.permute(0, 3, 1, 2)


@pytest.mark.parametrize("family, theirs_reshape", [("vit", _vit_reshape), ("swin", _swin_reshape)])
def test_transformer_maps_match_pytorch_grad_cam(family, theirs_reshape):
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from tests.test_methods import as_pytorch_grad_cam_shows

    build, size, *_ = FAMILIES[family]
    model = build().eval()
    torch.manual_seed(2)
    images = torch.randn(3, 3, size, size)
    name, layer = find_target_layer(model, images[:1])
    with preserved_model_state(model):
        logits, maps = class_maps(model, layer, images, torch.tensor([0, 1, 2]), [get_method("hirescam")],
                                  layer_reshape(model, name, layer, images[:1]))
    with pytorch_grad_cam.HiResCAM(model=model, target_layers=[layer], reshape_transform=theirs_reshape) as cam:
        theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in logits.argmax(1)])
    assert np.abs(as_pytorch_grad_cam_shows(maps["hirescam"][0], size) - theirs).max() < 1e-4
    assert theirs.max() > 0.5


# ---------------------------------------------------------------- the reshape flows through `auditor audit`


def test_audit_runs_a_vit_end_to_end(image_folder, tmp_path):
    data, masks = image_folder
    out = tmp_path / "run"
    args = ["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory",
            "tests.test_architectures:tiny_vit", "--model.factory_kwargs", "{num_classes: 2}", "--out", str(out),
            "--sweep.batch_size", "6", "--sweep.methods", "[layercam, gradcam]", "--sweep.faithfulness", "true"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target_layer"] == "encoder.layers.encoder_layer_0.ln_1"
    assert manifest["target_reshape"].startswith("TokensToGrid(prefix=1")
    records = pd.read_parquet(out / "records.parquet")
    assert len(records) == 12
    for column in ("pred_energy_in_mask", "gradcam_true_energy_in_mask", "pred_cam_max", "gradcam_pred_cam_max",
                   "deletion_drop", "random_drop"):
        assert records[column].notna().any(), column
    assert (records["pred_cam_max"] > 0).any()
    per_class = pd.read_csv(out / "per_class.csv")
    assert {"mean_deletion_drop", "mean_random_drop"} <= set(per_class.columns)
    assert np.load(out / "maps_gradcam.npy").shape == (12, 2, 32, 32)
