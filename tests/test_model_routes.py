"""Models as people ship them: timm names, Hugging Face folders, torch.export programs, TorchScript, safetensors.

Every model is built in code with random weights (nothing is downloaded). Each route runs through `main([...])`
on a tiny ImageFolder, and its Grad-CAM must equal Grad-CAM of the same network as a plain nn.Module (same
weights, the layer and reshape written out by hand here) for the predicted and the true class.
"""

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from auditor.architectures import HuggingFaceLogits, layer_reshape
from auditor.cams import GradCAM, class_maps, preserved_model_state
from auditor.cli import main
from auditor.config import DataConfig, load_config
from auditor.data import AuditDataset, build_samples, collate, read_class_names, with_model_preprocessing
from auditor.models import (
    _huggingface_preprocessing,
    find_target_layer,
    hookable,
    load_checkpoint,
    load_model,
    open_model,
)
from auditor.runs import load_run

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
from safetensors.torch import save_file  # noqa: E402

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()


def _audit(data, out, *extra) -> int:
    return main(["audit", "--data.root", str(data), "--out", str(out), "--sweep.batch_size", "6",
                 "--findings.enabled", "false", *extra])


def _error_paragraph(err: str) -> str:
    """The CLI's error: one line, the last, and the only one that says error (progress logs may come before)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("auditor: error: "), err
    assert sum("error" in line for line in lines) == 1, err
    return lines[-1]


def _route(*overrides):
    """What `auditor audit` builds for these config overrides: model, target layer, reshape, and a batch of images."""
    cfg = load_config(None, list(overrides))
    loaded = open_model(cfg.model)
    cfg.data = with_model_preprocessing(cfg.data, loaded.preprocessing)
    samples, classes = build_samples(cfg.data, read_class_names(cfg.model.classes, None) or loaded.classes)
    dataset = AuditDataset(samples, cfg.data)
    batch = collate([dataset[i] for i in range(len(dataset))])
    model = hookable(loaded, batch["image"][:1]).eval()  # as prepare() does before any probe
    name, layer = find_target_layer(model, batch["image"][:1], cfg.model.target_layer)
    return model, name, layer, layer_reshape(model, name, layer, batch["image"][:1]), batch, classes


def _gradcam(model, layer, images, labels, reshape) -> torch.Tensor:
    """Raw Grad-CAM maps [2, B, h, w] for the predicted and the true class, scaled to a maximum of 1 per map."""
    with preserved_model_state(model):
        _, maps = class_maps(model, layer, images, labels, [GradCAM()], reshape)
    maps = maps["gradcam"]
    return maps / maps.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)


def assert_same_gradcam(route, plain, plain_layer, plain_reshape):
    """The route's Grad-CAM equals the plain module's within 1e-4 (maps scaled to 1), for both classes."""
    model, _, layer, reshape, batch, _ = route
    images, labels = batch["image"], batch["label"]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), plain.eval()(images), atol=1e-5, rtol=1e-5)
    ours = _gradcam(model, layer, images, labels, reshape)
    theirs = _gradcam(plain, plain_layer, images, labels, plain_reshape)
    assert ours.shape == theirs.shape and ours.shape[1] == len(images)
    assert (theirs.amax(dim=(2, 3)) > 0.99).float().mean() > 0.5  # mostly non-blank maps, not zeros agreeing
    assert (ours - theirs).abs().max() < 1e-4


def tokens_to_grid(prefix: int, side: int):
    """By hand: drop `prefix` tokens, [B, side * side, C] -> [B, C, side, side]."""
    return lambda t: t[:, prefix:].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)


def nhwc(t):
    return t.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------------------- timm

VIT_KWARGS = {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 16, "num_heads": 2}
# family: (timm name, create_model kwargs, data.resize or None for the model's own, target layer, hand reshape)
TIMM = {
    "resnet": ("resnet18", {"layers": (1, 1, 1, 1), "channels": (8, 8, 16, 16)}, 64, "layer4", None),
    "convnext": ("convnext_atto", {"depths": (1, 1, 1, 1), "dims": (8, 16, 16, 16)}, 64, "norm_pre", None),
    "efficientnet": ("test_efficientnet", {}, 64, "bn2", None),
    "regnet": ("regnetx_002", {"depth": 4, "w0": 8, "wa": 16.0, "wm": 1.5, "stem_width": 8}, 64, "final_conv", None),
    "vit": ("vit_tiny_patch16_224", VIT_KWARGS, None, "blocks.0.norm1", tokens_to_grid(1, 4)),
    "deit": ("deit_tiny_distilled_patch16_224", VIT_KWARGS, None, "blocks.0.norm1", tokens_to_grid(2, 4)),
    "swin": ("swin_tiny_patch4_window7_224", {"img_size": 32, "patch_size": 4, "window_size": 4, "embed_dim": 8,
                                              "depths": (1, 1), "num_heads": (1, 2)}, None, "norm", nhwc),
}


def _timm_checkpoint(tmp_path, family, num_classes=2):
    name, kwargs, _, _, _ = TIMM[family]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs).eval()
    for module in model.modules():  # timm zero-initialises some heads: random weights so that maps differ
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.5)
    path = tmp_path / f"{family}.safetensors"
    save_file(model.state_dict(), str(path))
    return model, path


def _timm_args(data, family, checkpoint):
    name, kwargs, resize, _, _ = TIMM[family]
    args = ["--data.root", str(data), "--model.timm", name, "--model.checkpoint", str(checkpoint),
            "--model.factory_kwargs", json.dumps(kwargs)]
    return args + (["--data.resize", str(resize)] if resize else [])


def _overrides(args):
    return [f"{key[2:]}={value}" for key, value in zip(args[::2], args[1::2])]


@pytest.mark.parametrize("family", sorted(TIMM))
def test_timm_gradcam_equals_the_plain_module(image_folder, tmp_path, family):
    data, _ = image_folder
    plain, checkpoint = _timm_checkpoint(tmp_path, family)
    route = _route(*_overrides(_timm_args(data, family, checkpoint)))
    _, _, _, layer_name, hand_reshape = TIMM[family]
    assert route[1] == layer_name
    assert_same_gradcam(route, plain, plain.get_submodule(layer_name), hand_reshape)


def _minmax(maps: np.ndarray) -> np.ndarray:
    maps = maps - maps.min(axis=(1, 2), keepdims=True)
    return maps / (1e-7 + maps.max(axis=(1, 2), keepdims=True))


def _as_pytorch_grad_cam_shows(maps: torch.Tensor, size: int) -> np.ndarray:
    """pytorch-grad-cam's pipeline on our maps: min-max at layer resolution, bilinear resize, min-max."""
    resized = torch.nn.functional.interpolate(torch.from_numpy(_minmax(maps.numpy()))[:, None], size=(size, size),
                                              mode="bilinear", align_corners=False)
    return _minmax(resized[:, 0].numpy())


def test_timm_vit_matches_pytorch_grad_cam_with_its_reshape(image_folder, tmp_path):
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    data, _ = image_folder
    plain, checkpoint = _timm_checkpoint(tmp_path, "vit")
    model, _, layer, reshape, batch, _ = _route(*_overrides(_timm_args(data, "vit", checkpoint)))
    images, labels = batch["image"], batch["label"]
    ours = _gradcam(model, layer, images, labels, reshape)

    def vit_reshape(tensor, height=4, width=4):  # pytorch-grad-cam's README recipe for timm's ViT
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    with pytorch_grad_cam.GradCAM(model=plain, target_layers=[plain.blocks[-1].norm1],
                                  reshape_transform=vit_reshape) as reference:
        for k, classes in enumerate((plain(images).argmax(1), labels)):
            theirs = reference(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in classes])
            assert np.abs(_as_pytorch_grad_cam_shows(ours[k], images.shape[-1]) - theirs).max() < 1e-4
            assert theirs.max() > 0.5


def test_timm_route_through_the_cli_takes_the_models_preprocessing(image_folder, tmp_path):
    data, masks = image_folder
    _, checkpoint = _timm_checkpoint(tmp_path, "deit")
    out = tmp_path / "run"
    assert _audit(data, out, "--data.masks", str(masks), *_timm_args(data, "deit", checkpoint)[2:]) == 0
    run = load_run(out)
    assert len(run.records) == 12 and np.isfinite(run.maps.astype(np.float32)).all()
    assert run.manifest["target_layer"] == "blocks.0.norm1"
    assert run.manifest["target_reshape"] == "TokensToGrid(prefix=2, aspect=(1, 1))"
    # deit's pretrained_cfg: ImageNet mean and std, bicubic, crop_pct 0.9 at img_size 32: resize 35, crop 32
    data_cfg = run.manifest["config"]["data"]
    assert (data_cfg["resize"], data_cfg["crop"], data_cfg["interpolation"]) == (35, 32, "bicubic")
    assert data_cfg["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_config_values_win_over_the_models_preprocessing():
    model = {"mean": [0.5] * 3, "std": [0.5] * 3, "resize": 35, "crop": 32, "interpolation": "bicubic"}
    cfg = with_model_preprocessing(DataConfig(resize=64, std=[0.2] * 3), model)
    assert (cfg.resize, cfg.crop, cfg.mean, cfg.std, cfg.interpolation) == (64, None, [0.5] * 3, [0.2] * 3, "bicubic")
    plain = with_model_preprocessing(DataConfig(), None)  # no model preprocessing: ImageNet's, no resize
    assert (plain.resize, plain.mean, plain.std) == (None, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def test_timm_preprocessing_follows_timms_eval_transform():
    cfg = open_model(load_config(None, ["model.timm=resnet18", "model.factory_kwargs={layers: [1, 1, 1, 1]}"]
                                 ).model).preprocessing
    # resnet18's pretrained_cfg: input 224, crop_pct 0.95, bicubic: timm resizes to floor(224 / 0.95) = 235
    assert cfg == {"mean": pytest.approx([0.485, 0.456, 0.406]), "std": pytest.approx([0.229, 0.224, 0.225]),
                   "resize": 235, "crop": 224, "interpolation": "bicubic"}


# -------------------------------------------------------------------------------------------- Hugging Face

def _hf_model(family):
    torch.manual_seed(0)
    labels = {"id2label": {0: "cat", 1: "dog"}, "label2id": {"cat": 0, "dog": 1}}
    vit = {"image_size": 32, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
           "intermediate_size": 32}
    if family == "vit":
        return transformers.ViTForImageClassification(transformers.ViTConfig(**vit, **labels))
    if family == "deit":
        return transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**vit, **labels))
    if family == "convnext":
        return transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
            num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], **labels))
    if family == "swin":
        return transformers.SwinForImageClassification(transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4, **labels))
    return transformers.ResNetForImageClassification(transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], **labels))


# family: (target layer, hand reshape)
HUGGINGFACE = {
    "vit": (r"model\.vit\.(encoder\.)?layers?\.0\.layernorm_before", tokens_to_grid(1, 4)),
    "deit": (r"model\.deit\.(encoder\.)?layers?\.0\.layernorm_before", tokens_to_grid(2, 4)),
    "convnext": (r"model\.convnext\.encoder\.stages\.1", None),
    "swin": (r"model\.swin\.layernorm", tokens_to_grid(0, 4)),
    "resnet": (r"model\.resnet\.encoder\.stages\.1", None),
}  # layer names as regular expressions: transformers 5 renamed ViT's encoder.layer.N to layers.N for some models


class PlainLogits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def _hf_folder(tmp_path, family):
    model = _hf_model(family).eval()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.5)
    folder = tmp_path / f"hf-{family}"
    model.save_pretrained(folder)
    return model, folder


@pytest.mark.parametrize("family", sorted(HUGGINGFACE))
def test_huggingface_gradcam_equals_the_plain_module(image_folder, tmp_path, family):
    data, _ = image_folder
    model, folder = _hf_folder(tmp_path, family)
    route = _route(f"data.root={data}", f"model.huggingface={folder}")
    assert isinstance(route[0], HuggingFaceLogits)
    layer_pattern, hand_reshape = HUGGINGFACE[family]
    assert re.fullmatch(layer_pattern, route[1]), route[1]
    plain = PlainLogits(model)
    assert_same_gradcam(route, plain, plain.get_submodule(route[1]), hand_reshape)


def test_huggingface_route_through_the_cli(image_folder, tmp_path):
    data, masks = image_folder
    model, folder = _hf_folder(tmp_path, "vit")
    model.config.id2label, model.config.label2id = {0: "dog", 1: "cat"}, {"dog": 0, "cat": 1}
    model.save_pretrained(folder)  # logit 0 is "dog": names come from id2label, not from the folders' order
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                                   image_std=[0.25] * 3).save_pretrained(folder)
    out = tmp_path / "run"
    assert _audit(data, out, "--data.masks", str(masks), "--model.huggingface", str(folder)) == 0
    run = load_run(out)
    assert run.manifest["classes"] == ["dog", "cat"]
    assert (run.records["label"] == run.records["id"].str.split("/").str[0]).all()
    assert np.isfinite(run.maps.astype(np.float32)).all() and len(run.records) == 12
    data_cfg = run.manifest["config"]["data"]
    assert (data_cfg["resize"], data_cfg["mean"], data_cfg["std"]) == ([32, 32], [0.5] * 3, [0.25] * 3)
    images = torch.stack([AuditDataset(build_samples(DataConfig(root=str(data)), ["dog", "cat"])[0],
                                       DataConfig(root=str(data), resize=[32, 32], mean=[0.5] * 3,
                                                  std=[0.25] * 3))[i]["image"] for i in range(12)])
    with torch.no_grad():
        expected = model(pixel_values=images).logits.argmax(1).tolist()
    assert sorted(run.records.sort_values("id")["pred_idx"].tolist()) == sorted(expected)


def test_huggingface_preprocessing_rescales_and_crops(tmp_path):
    path = tmp_path / "preprocessor_config.json"
    # ConvNeXt's processor: shortest edge 32 with crop_pct 0.875 -> resize to int(32 / 0.875) = 36, crop 32
    path.write_text(json.dumps({"do_resize": True, "size": {"shortest_edge": 32}, "crop_pct": 0.875, "resample": 3,
                                "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    assert _huggingface_preprocessing(path) == {"mean": [0.5] * 3, "std": [0.5] * 3, "resize": 36, "crop": 32,
                                                "interpolation": "bicubic"}
    # no rescaling: the model sees 0-255 pixels, so (p * 255 - 127.5) / 63.75 = (p - 0.5) / 0.25
    path.write_text(json.dumps({"do_rescale": False, "image_mean": [127.5] * 3, "image_std": [63.75] * 3,
                                "do_resize": False}))
    assert _huggingface_preprocessing(path) == {"mean": [0.5] * 3, "std": [0.25] * 3}


# ------------------------------------------------------------------------------- torch.export and TorchScript

class NormalisingNet(nn.Module):
    """Normalises its input inside forward: not a chain of its top-level modules."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU())
        self.fc = nn.Linear(8, 2)
        self.register_buffer("mean", torch.tensor([0.2, 0.1, 0.0]).view(1, 3, 1, 1))

    def forward(self, x):
        x = (x - self.mean) / 0.5
        return self.fc(self.features(x).mean(dim=(2, 3)))


class BranchingLeNet(nn.Module):
    """A LeNet that accepts RGB by branching on the input's channel count."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(4, 8, 5), nn.ReLU(), nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 5 * 5, 2)

    def forward(self, x):
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


EXPORTED = {"normalising": (NormalisingNet, "features"), "branching": (BranchingLeNet, "pool2")}


def _export(model, path, batch=2):
    dynamic = ({0: torch.export.Dim("batch")},) if batch == 2 else None
    program = torch.export.export(model.eval(), (torch.randn(batch, 3, 32, 32),), dynamic_shapes=dynamic)
    torch.export.save(program, str(path))
    return path


def _script(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model.eval()), str(path))
    return path


@pytest.mark.parametrize("shape", sorted(EXPORTED))
def test_torchscript_refused_today_audits_as_pt2(image_folder, tmp_path, capsys, shape):
    data, masks = image_folder
    build, layer_name = EXPORTED[shape]
    model = build()
    assert _audit(data, tmp_path / "ts", "--model.torchscript", str(_script(model, tmp_path / "m.ts"))) == 2
    message = _error_paragraph(capsys.readouterr().err)
    assert "cannot be audited" in message and "torch.export.export(" in message and "model.exported" in message

    pt2 = _export(model, tmp_path / "m.pt2")
    out = tmp_path / "run"
    assert _audit(data, out, "--data.masks", str(masks), "--model.exported", str(pt2)) == 0
    run = load_run(out)
    assert run.manifest["target_layer"] == layer_name and len(run.records) == 12
    assert np.isfinite(run.maps.astype(np.float32)).all() and run.maps.astype(np.float32).max() > 0.99
    route = _route(f"data.root={data}", f"model.exported={pt2}")
    assert_same_gradcam(route, model, model.get_submodule(layer_name), None)


def test_pt2_of_a_vit_with_its_layer_named(image_folder, tmp_path):
    """A program has lost the Python class the ViT rule needs; named, its tokens are still read as a grid."""
    data, _ = image_folder
    plain, _ = _timm_checkpoint(tmp_path, "vit")
    pt2 = _export(plain, tmp_path / "vit.pt2")
    route = _route(f"data.root={data}", f"model.exported={pt2}", "model.target_layer=blocks.0.norm1")
    assert_same_gradcam(route, plain, plain.blocks[0].norm1, tokens_to_grid(1, 4))


def test_torchscript_chain_gradcam_equals_the_plain_module(image_folder, tmp_path):
    from tests.conftest import tiny_cnn

    data, _ = image_folder
    model = tiny_cnn(2).eval()
    route = _route(f"data.root={data}", f"model.torchscript={_script(model, tmp_path / 'chain.ts')}")
    assert route[1] == "3"
    assert_same_gradcam(route, model, model[3], None)


def test_pt2_checked_against_the_program_before_use(image_folder, tmp_path):
    data, _ = image_folder
    loaded = open_model(load_config(None, [f"model.exported={_export(NormalisingNet(), tmp_path / 'm.pt2')}"]).model)
    example = torch.randn(1, 3, 32, 32)
    assert hookable(loaded, example) is loaded.module
    with torch.no_grad():
        loaded.module.get_submodule("fc").bias.add_(1.0)  # the module tree no longer computes what the program does
    with pytest.raises(Exception, match="does not reproduce the program's own output"):
        hookable(loaded, example)


# -------------------------------------------------------------------------------------------------- safetensors

def test_safetensors_checkpoints_for_the_state_dict_routes(image_folder, tmp_path):
    from tests.conftest import tiny_cnn

    data, masks = image_folder
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_cnn(2).state_dict(), str(path))
    out = tmp_path / "run"
    assert _audit(data, out, "--data.masks", str(masks), "--model.factory", "tests.conftest:tiny_cnn",
                  "--model.checkpoint", str(path)) == 0
    assert len(load_run(out).records) == 12

    import torchvision

    torch.manual_seed(0)
    squeezenet = torchvision.models.squeezenet1_1(num_classes=5).eval()
    save_file(squeezenet.state_dict(), str(tmp_path / "squeezenet.safetensors"))
    loaded = load_model(load_config(None, ["model.arch=squeezenet1_1",
                                           f"model.checkpoint={tmp_path / 'squeezenet.safetensors'}"]).model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), squeezenet(x))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match="cannot be read as safetensors"):
        load_checkpoint(str(tmp_path / "bad.safetensors"))


# ------------------------------------------------------------------------------------------------ wrong inputs

def _wrong_inputs(tmp_path) -> dict[str, tuple[list[str], str]]:
    no_config = tmp_path / "not-a-model"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"")
    _, five = _timm_checkpoint(tmp_path, "resnet", num_classes=5)
    name, kwargs, *_ = TIMM["resnet"]
    timm_five = ["--model.timm", name, "--model.checkpoint", str(five), "--data.resize", "64"]
    return {
        "unknown timm name": (["--model.timm", "resnet_18"], "Unknown timm model 'resnet_18'"),
        "unknown resize filter": (["--model.factory", "tests.conftest:tiny_cnn", "--data.interpolation", "lanczos"],
                                  "data.interpolation must be one of bilinear, bicubic, nearest"),
        "folder without config.json": (["--model.huggingface", str(no_config)], "has no config.json"),
        "pt2 with an unknown target layer": (
            ["--model.exported", str(_export(NormalisingNet(), tmp_path / "m.pt2")), "--model.target_layer",
             "features.9"], "model.target_layer 'features.9' is not a module of the model"),
        "pt2 for one batch size only": (["--model.exported", str(_export(NormalisingNet(), tmp_path / "one.pt2", 1))],
                                        "Export it again with a dynamic batch dimension"),
        "checkpoint for 5 classes, data with 2": (
            [*timm_five, "--model.factory_kwargs", json.dumps(kwargs)], "The model outputs (5,) scores per image"),
        "checkpoint for 5 classes, model built for 2": (
            [*timm_five, "--model.factory_kwargs", json.dumps({**kwargs, "num_classes": 2})],
            "The checkpoint was trained for 5 classes but timm model resnet18 builds a model for 2"),
    }


def test_wrong_inputs_give_one_paragraph_and_exit_2(image_folder, tmp_path, capsys):
    data, _ = image_folder
    for case, (args, message) in _wrong_inputs(tmp_path).items():
        assert _audit(data, tmp_path / "run", *args) == 2, case
        assert message in _error_paragraph(capsys.readouterr().err), case


def test_example_configs_name_each_route():
    root = Path(__file__).resolve().parents[1] / "configs"
    routes = {name: load_config(root / f"{name}.yaml").model for name in ("timm", "huggingface", "exported")}
    assert routes["timm"].timm and routes["timm"].checkpoint.endswith(".safetensors")
    assert routes["huggingface"].huggingface and routes["exported"].exported.endswith(".pt2")
