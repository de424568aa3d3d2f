"""Load a classifier as people ship it and find its target layer.

Routes (one config key each): a torchvision name or a timm name + state_dict (`.safetensors` or torch.save's), a
Hugging Face `save_pretrained` folder, a torch.export program (`.pt2`), a TorchScript file, a factory function, or
a trusted pickled model. `open_model` loads one into a `LoadedModel`; `hookable` then turns it into a module whose
layers take Python hooks, checked to reproduce the original's output where it had to be rebuilt.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import logging
import math
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from auditor.architectures import HuggingFaceLogits, family_target_layer
from auditor.config import INTERPOLATIONS, ModelConfig
from auditor.errors import AuditorError, first_line
from auditor.hooks import forward_hooks

log = logging.getLogger("auditor")

ROUTES = ("arch", "timm", "huggingface", "exported", "torchscript", "factory")
EXPORT_HOWTO = (
    'ep = torch.export.export(model.eval(), (torch.randn(2, 3, H, W),), dynamic_shapes=({0: torch.export.Dim("batch")},)); '
    'torch.export.save(ep, "model.pt2")'
)


def load_checkpoint(path: str, trust: bool = False):
    """A state_dict, loaded with weights_only=True; pickled objects (a full model) only with trust, since
    unpickling runs code from the file."""
    if not Path(path).is_file():
        raise AuditorError(f"Checkpoint {path} does not exist.")
    if Path(path).suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise AuditorError(
                f"Checkpoint {path} cannot be read as safetensors ({first_line(err)}): it is damaged or not a file "
                "safetensors.torch.save_file wrote. Save it again with save_file(model.state_dict(), path)."
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        pickled = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if pickled is None:
            detail = type(err).__name__ if isinstance(err, pickle.UnpicklingError) else first_line(err)
            raise AuditorError(
                f"Checkpoint {path} cannot be read: it is damaged or not a file torch.save wrote ({detail}). "
                "Save it again with torch.save(model.state_dict(), path)."
            ) from None
        if not trust:
            raise AuditorError(
                f"Checkpoint {path} is not a plain state_dict: it holds pickled Python objects ({pickled.group(1)}), "
                "and unpickling them runs code from the file. Save model.state_dict() instead, or pass "
                "--trust-checkpoint (model.trust_checkpoint=true) if you trust its source."
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001
        raise AuditorError(
            f"Checkpoint {path} cannot be unpickled ({first_line(err)}): the classes it names must be importable, "
            "so run from the project that saved it, or save model.state_dict() there instead."
        ) from None


def _unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    """Accept {"state_dict": ...} / {"model": ...} wrappers, a trusted full model (its weights are checked against
    the configured architecture like any state_dict) and DataParallel's "module." prefixes."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), (dict, nn.Module)):
            obj = obj[key]
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AuditorError("The checkpoint is not a state_dict (a mapping of parameter names to tensors).")
    if all(k.startswith("module.") for k in obj):
        obj = OrderedDict((k[len("module."):], v) for k, v in obj.items())
    return obj


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    ours, theirs = _classifier_out_features(model, own), _classifier_out_features(model, state)
    if wrong and not missing and not unexpected and ours != theirs:
        raise AuditorError(
            f"The checkpoint was trained for {theirs} classes but {source} builds a model for {ours} (the last "
            f"layer's outputs). Build it for {theirs} classes (with model.factory_kwargs, e.g. {{num_classes: "
            f"{theirs}}}) and give the {theirs} class names in logit order in model.classes or model.classes_file."
        )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing from the checkpoint: {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
        if unexpected:
            parts.append(f"not in the model: {', '.join(unexpected[:12])}{' ...' if len(unexpected) > 12 else ''}")
        if wrong:
            parts.append("of another shape: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:6]))
        raise AuditorError(
            f"The checkpoint's keys do not match the architecture {source}: " + "; ".join(parts)
            + ". Check model.arch / model.factory against the checkpoint."
        )
    model.load_state_dict(state)


def _classifier_out_features(model: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """The number of classes a checkpoint was trained for, read from the weight of the model's last Linear."""
    last = [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    for name in reversed(last):
        weight = state.get(f"{name}.weight")
        if weight is not None:
            return int(weight.shape[0])
    return None


@dataclass
class LoadedModel:
    """A network as loaded, with what its source says about classes and preprocessing.

    `reference` is the callable the module must reproduce where the module is a rebuilt, hookable copy (a
    torch.export program's own forward); `hookable` checks it once on a real image.
    """

    module: nn.Module
    classes: list[str] | None = None  # class names in logit order (a Hugging Face config's id2label)
    preprocessing: dict | None = None  # mean, std, resize, crop, interpolation (see data.with_model_preprocessing)
    reference: Callable | None = None


def load_model(cfg: ModelConfig) -> nn.Module:
    """Build the model the config describes, on the CPU, with its weights loaded."""
    return open_model(cfg).module


def open_model(cfg: ModelConfig) -> LoadedModel:
    """Load the model from the one route the config sets (module docstring)."""
    sources = [key for key in ROUTES if getattr(cfg, key)]
    if len(sources) > 1 or not sources and not cfg.checkpoint:
        raise AuditorError(
            "Set exactly one of model.arch or model.timm (each with model.checkpoint), model.huggingface, "
            "model.exported, model.torchscript or model.factory; or only model.checkpoint for a pickled full model "
            f"(with --trust-checkpoint). This config sets {', '.join(f'model.{k}' for k in sources) or 'none'}."
        )
    if not sources:
        loaded = load_checkpoint(cfg.checkpoint, cfg.trust_checkpoint)
        if isinstance(loaded, dict) and isinstance(loaded.get("model"), nn.Module):
            loaded = loaded["model"]  # torch.save({"model": model, ...})
        if not isinstance(loaded, nn.Module):
            raise AuditorError(
                f"Checkpoint {cfg.checkpoint} holds weights, not a model: name their architecture in model.arch "
                "(a torchvision name), model.timm (a timm name) or model.factory (package.module:function)."
            )
        return LoadedModel(loaded)
    if cfg.torchscript:
        if not Path(cfg.torchscript).is_file():
            raise AuditorError(f"TorchScript file {cfg.torchscript} does not exist.")
        try:
            return LoadedModel(torch.jit.load(cfg.torchscript, map_location="cpu"))
        except Exception as err:  # noqa: BLE001
            raise AuditorError(
                f"TorchScript file {cfg.torchscript} cannot be loaded ({first_line(err)}): save it again with "
                "torch.jit.save, or give model.arch / model.factory with a state_dict instead."
            ) from None
    if cfg.exported:
        return _exported_model(Path(cfg.exported))
    if cfg.huggingface:
        return _huggingface_model(cfg)
    if cfg.timm:
        return _timm_model(cfg)
    if cfg.arch:
        if cfg.arch not in torchvision.models.list_models():
            close = difflib.get_close_matches(cfg.arch, torchvision.models.list_models(), n=3)
            raise AuditorError(f"Unknown torchvision architecture {cfg.arch!r}. Close names: {close}.")
        if not cfg.checkpoint:
            raise AuditorError("model.arch needs model.checkpoint, a state_dict file of the trained weights.")
        state = _unwrap_state_dict(load_checkpoint(cfg.checkpoint, cfg.trust_checkpoint))
        probe = torchvision.models.get_model(cfg.arch, weights=None)
        num_classes = _classifier_out_features(probe, state) or 1000
        model = torchvision.models.get_model(cfg.arch, weights=None, num_classes=num_classes)
        _load_state(model, state, cfg.arch)
        return LoadedModel(model)
    module_name, sep, attr = cfg.factory.partition(":")
    if not sep:
        raise AuditorError(f"model.factory {cfg.factory!r} must look like package.module:function.")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise AuditorError(f"Cannot import model.factory {cfg.factory!r}: {err}.") from None
    try:
        model = factory(**cfg.factory_kwargs)
    except Exception as err:  # noqa: BLE001 - any failure of the user's factory; --debug shows its traceback
        raise AuditorError(
            f"model.factory {cfg.factory!r} failed with model.factory_kwargs {cfg.factory_kwargs}: {first_line(err)}. "
            "Check the keyword arguments against the function's signature."
        ) from err
    if not isinstance(model, nn.Module):
        raise AuditorError(f"model.factory {cfg.factory!r} returned {type(model).__name__}, not a torch nn.Module.")
    if cfg.checkpoint:
        _load_state(model, _unwrap_state_dict(load_checkpoint(cfg.checkpoint, cfg.trust_checkpoint)), cfg.factory)
    return LoadedModel(model)


def _optional(name: str, key: str):
    """Import an optional library (the `models` extra), or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise AuditorError(
            f"{key} needs the {name} package, which is not installed: pip install 'auditor[models]' (or pip install "
            f"{name})."
        ) from None


def _timm_model(cfg: ModelConfig) -> LoadedModel:
    """timm.create_model(name, pretrained=False): nothing is downloaded; the weights come from model.checkpoint,
    and the number of classes from the checkpoint's classifier (unless factory_kwargs sets num_classes)."""
    timm = _optional("timm", "model.timm")
    if not timm.is_model(cfg.timm):
        close = difflib.get_close_matches(cfg.timm, timm.list_models(), n=3)
        raise AuditorError(
            f"Unknown timm model {cfg.timm!r} (timm {timm.__version__} knows {len(timm.list_models())} names; close "
            f"ones: {close}). Give a timm.create_model name in model.timm, e.g. resnet50 or convnext_tiny; "
            "timm.list_models('*pattern*') lists them."
        )
    kwargs = dict(cfg.factory_kwargs)
    try:
        model = timm.create_model(cfg.timm, pretrained=False, **kwargs)
    except Exception as err:  # noqa: BLE001 - any failure of timm's builder
        raise AuditorError(
            f"timm.create_model({cfg.timm!r}, pretrained=False) failed with model.factory_kwargs {kwargs}: "
            f"{first_line(err)}. Check the keyword arguments against that model's constructor."
        ) from None
    if cfg.checkpoint:
        state = _unwrap_state_dict(load_checkpoint(cfg.checkpoint, cfg.trust_checkpoint))
        num_classes = _classifier_out_features(model, state)
        if "num_classes" not in kwargs and num_classes and num_classes != model.num_classes:
            model.reset_classifier(num_classes)
        _load_state(model, state, f"timm model {cfg.timm}")
    else:
        log.warning("model.timm %s has no model.checkpoint: auditing random weights", cfg.timm)
    return LoadedModel(model, preprocessing=_timm_preprocessing(timm, model, kwargs))


def _timm_preprocessing(timm, model: nn.Module, kwargs: dict) -> dict:
    """Mean, std, size and interpolation of the model's pretrained_cfg, as timm's eval transform applies them:
    resize the shorter side to size / crop_pct, then centre-crop size (size from img_size where it was given)."""
    data = timm.data.resolve_model_data_config(model)
    height, width = data["input_size"][1:]
    if "img_size" in kwargs:
        size = kwargs["img_size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
    crop_pct = data.get("crop_pct") or 1.0
    if height == width:
        resize, crop = math.floor(height / crop_pct), height
    else:
        resize, crop = [height, width], None
    interpolation = data.get("interpolation")
    return {"mean": [float(v) for v in data["mean"]], "std": [float(v) for v in data["std"]], "resize": resize,
            "crop": crop, "interpolation": interpolation if interpolation in INTERPOLATIONS else None}


def _huggingface_model(cfg: ModelConfig) -> LoadedModel:
    """AutoModelForImageClassification.from_pretrained(folder, local_files_only=True), returning `.logits`."""
    folder = Path(cfg.huggingface)
    if not (folder / "config.json").is_file():
        what = "has no config.json" if folder.is_dir() else "is not a folder"
        raise AuditorError(
            f"model.huggingface {folder} {what}: point it at a folder written by model.save_pretrained(folder) "
            "for an AutoModelForImageClassification (config.json and model.safetensors; "
            "preprocessor_config.json from the image processor's save_pretrained is optional)."
        )
    transformers = _optional("transformers", "model.huggingface")
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar in logs
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32
        )
    except Exception as err:  # noqa: BLE001 - transformers raises many types
        raise AuditorError(
            f"model.huggingface {folder} cannot be loaded as an image classifier ({first_line(err)}). It must "
            "hold what save_pretrained writes for an AutoModelForImageClassification (ViT, DeiT, ConvNeXt, Swin, "
            "ResNet, ...): config.json and the weights (model.safetensors)."
        ) from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    wrapped = HuggingFaceLogits(model.eval())
    if cfg.checkpoint:
        _load_state(model, _unwrap_state_dict(load_checkpoint(cfg.checkpoint, cfg.trust_checkpoint)), str(folder))
    labels = [str(model.config.id2label[i]) for i in sorted(model.config.id2label)]
    generic = labels == [f"LABEL_{i}" for i in range(len(labels))]  # transformers' placeholders, not names
    return LoadedModel(wrapped, classes=None if generic else labels,
                       preprocessing=_huggingface_preprocessing(folder / "preprocessor_config.json"))


_PIL_FILTERS = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "bicubic"}  # 1 = Lanczos, closest to bicubic


def _huggingface_preprocessing(path: Path) -> dict | None:
    """Mean, std, size and interpolation from an image processor's preprocessor_config.json (None when absent).

    The processor computes (pixels * rescale_factor - mean) / std on 0-255 pixels; auditor's pipeline feeds
    pixels / 255, so mean and std are divided by 255 * rescale_factor (1 when do_rescale is off).
    """
    if not path.is_file():
        return None
    try:
        proc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AuditorError(f"{path} is not valid JSON ({err}): save the image processor again.") from None
    scale = 255.0 * (proc.get("rescale_factor", 1 / 255) if proc.get("do_rescale", True) else 1.0)
    out: dict = {}
    if proc.get("do_normalize", True) and proc.get("image_mean") and proc.get("image_std"):
        out["mean"] = [float(m) / scale for m in proc["image_mean"]]
        out["std"] = [float(s) / scale for s in proc["image_std"]]
    elif not proc.get("do_normalize", True):
        out["mean"], out["std"] = [0.0] * 3, [1.0 / scale] * 3
    size = proc.get("size")
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if proc.get("do_resize", True) and isinstance(size, dict):
        if "height" in size and "width" in size:
            out["resize"] = [int(size["height"]), int(size["width"])]
        elif "shortest_edge" in size:
            edge, crop_pct = int(size["shortest_edge"]), proc.get("crop_pct")
            if crop_pct and edge < 384:  # ConvNeXt's processor: resize to edge / crop_pct, crop edge
                out["resize"], out["crop"] = int(edge / crop_pct), edge
            else:
                out["resize"] = [edge, edge] if crop_pct else edge
    crop = proc.get("crop_size")
    if proc.get("do_center_crop") and isinstance(crop, dict) and crop.get("height") == crop.get("width"):
        out["crop"] = int(crop["height"])
    if proc.get("resample") in _PIL_FILTERS:
        out["interpolation"] = _PIL_FILTERS[proc["resample"]]
    return out


def _exported_model(path: Path) -> LoadedModel:
    """A torch.export program, unflattened into a module tree whose submodules take hooks; `hookable` checks
    that it reproduces the program's own output."""
    if not path.is_file():
        raise AuditorError(f"model.exported {path} does not exist. Save one with: {EXPORT_HOWTO}.")
    try:
        program = torch.export.load(str(path))
    except Exception as err:  # noqa: BLE001 - torch raises many types for a file that is not a program
        raise AuditorError(
            f"model.exported {path} cannot be loaded as a torch.export program ({first_line(err)}). Save it with: "
            f"{EXPORT_HOWTO}."
        ) from None
    inputs = [node for node in program.graph.nodes
              if node.op == "placeholder" and node.name in program.graph_signature.user_inputs]
    value = inputs[0].meta.get("val") if len(inputs) == 1 else None
    if value is None or getattr(value, "ndim", 0) != 4:
        raise AuditorError(
            f"model.exported {path} takes {len(inputs)} inputs, not one image batch [B, C, H, W]. Export the "
            f"classifier with only the images as input: {EXPORT_HOWTO}."
        )
    if isinstance(value.shape[0], int):
        raise AuditorError(
            f"model.exported {path} was exported for batches of exactly {value.shape[0]} image(s); auditor feeds "
            f"batches of any size. Export it again with a dynamic batch dimension (and an example batch of 2): "
            f"{EXPORT_HOWTO}."
        )
    try:
        module = torch.export.unflatten(program)
    except Exception as err:  # noqa: BLE001
        raise AuditorError(
            f"model.exported {path} cannot be unflattened into its modules ({first_line(err)}), so no layer can "
            "be hooked. Export it with torch.export.export(..., strict=False) from the eager model."
        ) from None
    return LoadedModel(module, reference=program.module())


def hookable(loaded: LoadedModel, example: torch.Tensor) -> nn.Module:
    """The loaded model as a module whose layers take Python hooks, checked once on `example` where it had to be
    rebuilt (a TorchScript chain, an unflattened torch.export program)."""
    if is_script_module(loaded.module):
        return ChildrenChain.from_script(loaded.module, example)
    if loaded.reference is not None:
        with torch.no_grad():
            expected, got = loaded.reference(example), loaded.module(example)
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape or not torch.allclose(
            expected, got, rtol=1e-5, atol=1e-5
        ):
            raise AuditorError(
                "The exported program's module tree (torch.export.unflatten) does not reproduce the program's own "
                "output, so its maps would explain another computation. Export the model again with "
                "torch.export.export(..., strict=False), or give model.arch / model.factory with a state_dict."
            )
    return loaded.module


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over parameter and buffer names and bytes: the same weights give the same fingerprint."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _Stage(nn.Module):
    """A Python shell around one scripted child: Python hooks attach here, where the script refuses them."""

    def __init__(self, scripted: nn.Module):
        super().__init__()
        self.scripted = scripted
        self.is_linear = getattr(scripted, "original_name", type(scripted).__name__) == "Linear"

    def forward(self, x):
        return self.scripted(x)


class ChildrenChain(nn.Module):
    """A TorchScript model re-run as its top-level children called in order, so a child can be hooked.

    Loaded TorchScript modules refuse Python hooks; most exported CNNs are such a chain (with a flatten before
    the first Linear). `from_script` checks the chain reproduces the scripted forward before it is used.
    """

    def __init__(self, script: nn.Module):
        super().__init__()
        for name, child in script.named_children():
            self.add_module(name, _Stage(child))  # the export's names, so model.target_layer reads the same

    def forward(self, x):
        for stage in self.children():
            if x.ndim > 2 and stage.is_linear:
                x = torch.flatten(x, 1)
            x = stage(x)
        return x

    @classmethod
    def from_script(cls, script: nn.Module, example: torch.Tensor) -> ChildrenChain:
        chain = cls(script)
        with torch.no_grad():
            expected = script(example)
            try:
                got = chain(example)
            except RuntimeError:
                got = None
        if got is None or not isinstance(expected, torch.Tensor) or expected.shape != got.shape or not torch.allclose(
            expected, got, atol=1e-5
        ):
            raise AuditorError(
                "This TorchScript model cannot be audited: TorchScript refuses Python hooks, and its forward does "
                "more than call its top-level modules in order (it normalises or branches on its input, or joins "
                "paths), so auditor cannot re-run it layer by layer. Export the eager model with torch.export "
                f"instead ({EXPORT_HOWTO}) and audit the .pt2 with model.exported; or give model.arch / "
                "model.factory with a state_dict."
            )
        return chain


def is_script_module(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def find_target_layer(model: nn.Module, example: torch.Tensor, name: str | None = None) -> tuple[str, nn.Module]:
    """The named layer, the layer a family rule names (ViT, Swin, VGG: see auditor.architectures), or else the
    last module whose output is a spatial [B, C, H, W] map (H * W > 1)."""
    # Scripted modules refuse Python hooks; a TorchScript model is hooked at its top-level stages only.
    modules = {n: m for n, m in model.named_modules() if not isinstance(m, torch.jit.ScriptModule)}
    name = name or family_target_layer(model)
    if name:
        if name not in modules:
            close = difflib.get_close_matches(name, list(modules), n=5)
            raise AuditorError(f"model.target_layer {name!r} is not a module of the model. Close names: {close}.")
        return name, modules[name]
    finished: list[tuple[str, tuple]] = []
    hooks = [
        (module, lambda mod, inp, out, name=module_name: finished.append(
            (name, tuple(out.shape) if isinstance(out, torch.Tensor) else ())))
        for module_name, module in modules.items()
        if module_name
    ]
    with forward_hooks(hooks), torch.no_grad():
        model(example)
    spatial = [n for n, shape in finished if len(shape) == 4 and shape[2] * shape[3] > 1]
    if not spatial:
        raise AuditorError(
            "No layer of the model outputs a spatial [B, C, H, W] map; name one in model.target_layer."
        )
    return spatial[-1], modules[spatial[-1]]
