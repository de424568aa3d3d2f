"""Load a classifier (torchvision name + state_dict, TorchScript, or a factory) and find its target layer."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn

from auditor.architectures import family_target_layer
from auditor.config import ModelConfig
from auditor.errors import AuditorError, first_line


def load_checkpoint(path: str, trust: bool = False):
    """A state_dict, loaded with weights_only=True; pickled objects (a full model) only with trust, since
    unpickling runs code from the file."""
    if not Path(path).is_file():
        raise AuditorError(f"Checkpoint {path} does not exist.")
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


def load_model(cfg: ModelConfig) -> nn.Module:
    """Build the model the config describes, on the CPU, with its weights loaded."""
    sources = [s for s in (cfg.arch, cfg.torchscript, cfg.factory) if s]
    if len(sources) > 1 or not sources and not cfg.checkpoint:
        raise AuditorError(
            "Set exactly one of model.arch (with model.checkpoint), model.torchscript or model.factory; or only "
            "model.checkpoint for a pickled full model (with --trust-checkpoint)."
        )
    if not sources:
        loaded = load_checkpoint(cfg.checkpoint, cfg.trust_checkpoint)
        if isinstance(loaded, dict) and isinstance(loaded.get("model"), nn.Module):
            loaded = loaded["model"]  # torch.save({"model": model, ...})
        if not isinstance(loaded, nn.Module):
            raise AuditorError(
                f"Checkpoint {cfg.checkpoint} holds weights, not a model: name their architecture in model.arch "
                "(a torchvision name) or model.factory (package.module:function)."
            )
        return loaded
    if cfg.torchscript:
        if not Path(cfg.torchscript).is_file():
            raise AuditorError(f"TorchScript file {cfg.torchscript} does not exist.")
        try:
            return torch.jit.load(cfg.torchscript, map_location="cpu")
        except Exception as err:  # noqa: BLE001
            raise AuditorError(
                f"TorchScript file {cfg.torchscript} cannot be loaded ({first_line(err)}): save it again with "
                "torch.jit.save, or give model.arch / model.factory with a state_dict instead."
            ) from None
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
        return model
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
    return model


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
                "This TorchScript model cannot be audited: TorchScript refuses Python hooks, and its forward is not "
                "a chain of its top-level modules that auditor could re-run. Export a state_dict and give "
                "model.arch or model.factory instead."
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
    handles = [
        module.register_forward_hook(
            lambda mod, inp, out, name=module_name: finished.append(
                (name, tuple(out.shape) if isinstance(out, torch.Tensor) else ())
            )
        )
        for module_name, module in modules.items()
        if module_name
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    spatial = [n for n, shape in finished if len(shape) == 4 and shape[2] * shape[3] > 1]
    if not spatial:
        raise AuditorError(
            "No layer of the model outputs a spatial [B, C, H, W] map; name one in model.target_layer."
        )
    return spatial[-1], modules[spatial[-1]]
