"""The call-scoped hook helper leaves no hook behind, whatever happens in the block."""

from pathlib import Path

import pytest
import torch
from torch import nn

from auditor.geometry import measure_geometry
from auditor.hooks import forward_hook, forward_hooks


def test_hook_runs_inside_and_is_removed_after():
    layer = nn.Linear(2, 2)
    seen = []
    with forward_hook(layer, lambda module, inputs, output: seen.append(output.shape)):
        layer(torch.zeros(3, 2))
        assert len(layer._forward_hooks) == 1
    layer(torch.zeros(3, 2))
    assert seen == [torch.Size([3, 2])] and not layer._forward_hooks


def test_hook_can_replace_the_output():
    layer = nn.Linear(2, 2)
    with forward_hook(layer, lambda module, inputs, output: output * 0 + 7):
        assert torch.equal(layer(torch.ones(1, 2)), torch.full((1, 2), 7.0))


def test_hooks_removed_when_block_raises():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with pytest.raises(RuntimeError, match="boom"):
        with forward_hooks([(m, lambda *args: None) for m in model]):
            assert all(len(m._forward_hooks) == 1 for m in model)
            raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())


def test_hooks_removed_when_a_hook_raises_in_forward():
    layer = nn.Linear(2, 2)

    def hook(module, inputs, output):
        raise ValueError("inside hook")

    with pytest.raises(ValueError, match="inside hook"):
        with forward_hook(layer, hook):
            layer(torch.zeros(1, 2))
    assert not layer._forward_hooks


def test_registered_hooks_removed_when_a_later_registration_fails():
    first = nn.Linear(2, 2)
    with pytest.raises(AttributeError):
        with forward_hooks([(first, lambda *args: None), (object(), lambda *args: None)]):
            pass  # never reached: the second pair is not a module
    assert not first._forward_hooks


def test_geometry_probe_leaves_no_hook():
    model = nn.Sequential(nn.Conv2d(1, 2, 5), nn.ReLU(), nn.Conv2d(2, 2, 5)).eval()
    measure_geometry(model, model[2], torch.zeros(1, 1, 28, 28))
    assert all(not m._forward_hooks for m in model.modules())


def test_hooks_are_registered_in_one_place():
    """Every forward hook and forward pre-hook auditor puts on a model goes through auditor.hooks, so none can be
    left behind."""
    package = Path(__file__).resolve().parents[1] / "auditor"
    registering = sorted(
        str(path.relative_to(package)) for path in package.rglob("*.py")
        if ("register_forward_hook" in path.read_text() or "register_forward_pre_hook" in path.read_text())
        and path.name != "hooks.py"
    )  # fmt: skip
    assert registering == []


def test_forward_pre_hook_is_removed_on_exit_and_optional_where_the_model_takes_none():
    from auditor.hooks import forward_pre_hook

    model = nn.Linear(2, 1)
    seen = []
    with pytest.raises(ValueError), forward_pre_hook(model, lambda _m, args: seen.append(args[0].shape)) as hooked:
        assert hooked
        model(torch.zeros(3, 2))
        raise ValueError("the block fails")
    assert seen == [torch.Size([3, 2])] and not model._forward_pre_hooks  # removed though the block raised
    scripted = torch.jit.script(nn.Linear(2, 1))  # takes no Python hooks
    with forward_pre_hook(scripted, lambda *_: None, required=False) as hooked:
        assert hooked is False
    with pytest.raises((AttributeError, RuntimeError)), forward_pre_hook(scripted, lambda *_: None):
        pass
