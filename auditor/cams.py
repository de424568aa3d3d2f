"""The CAM engine: one forward, a backward through the head only, maps for several classes per image.

`class_maps` hooks the target layer and replaces its output by a detached leaf that requires grad. With every
parameter frozen for the duration, the backbone records no graph at all, and `torch.autograd.grad` with respect
to that leaf runs backward through the layers after the target layer only: no parameter gradient is ever
written. Each method is a small subclass of `CamMethod` that only says how activations and gradients combine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from auditor.errors import AuditorError

ReshapeFn = Callable[[torch.Tensor], torch.Tensor]


class CamMethod:
    """A class activation map from the target layer's activations A and the class score's gradients G.

    Both are [B, C, h, w]; the map is ReLU(sum_c weights_c * A_c), [B, h, w], before any normalisation.
    """

    name = "base"

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return torch.relu((self.weights(activations, gradients) * activations).sum(dim=1))


class GradCAM(CamMethod):
    """Grad-CAM (Selvaraju et al.): channel weights are the spatial mean of the gradients."""

    name = "gradcam"

    def weights(self, activations, gradients):
        return gradients.mean(dim=(2, 3), keepdim=True)


METHODS: dict[str, type[CamMethod]] = {cls.name: cls for cls in (GradCAM,)}


def get_method(name: str) -> CamMethod:
    if name not in METHODS:
        raise AuditorError(f"Unknown CAM method {name!r} in sweep.methods. Known: {', '.join(sorted(METHODS))}.")
    return METHODS[name]()


@contextlib.contextmanager
def preserved_model_state(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters inside; the caller's modes and requires_grad flags restored after."""
    modes = {module: module.training for module in model.modules()}
    flags = {param: param.requires_grad for param in model.parameters()}
    try:
        model.eval()
        for param in flags:
            param.requires_grad_(False)
        yield
    finally:
        for module, training in modes.items():
            module.training = training
        for param, flag in flags.items():
            param.requires_grad_(flag)


@contextlib.contextmanager
def captured_activation(layer: nn.Module) -> Iterator[dict]:
    """Hook `layer` so its output becomes a grad-requiring leaf; the hook is removed on exit, also on error."""
    store: dict = {}

    def hook(module, inputs, output):
        leaf = output.detach().requires_grad_(True)
        store["activation"] = leaf
        return leaf.clone()  # a non-leaf copy, so in-place ops after the layer cannot touch the leaf

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def class_maps(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    methods: Sequence[CamMethod],
    reshape: ReshapeFn | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits [B, K] and, per method, raw maps [2, B, h, w] for the predicted (0) and the true (1) class.

    The caller holds `preserved_model_state(model)`; images need no grad.
    """
    with captured_activation(layer) as store, torch.enable_grad():
        logits = model(images)
        if "activation" not in store:
            raise AuditorError("The target layer never ran in the model's forward; name another model.target_layer.")
        leaf = store["activation"]
        activations = reshape(leaf) if reshape else leaf
        if activations.ndim != 4:
            raise AuditorError(
                f"The target layer's output has shape {tuple(leaf.shape)}, not [B, C, H, W]: choose a spatial layer."
            )
        predicted = logits.argmax(dim=1)
        targets = (predicted, labels)
        gradients = []
        for i, target in enumerate(targets):
            # Images are independent in eval mode, so the gradient of the summed scores gives every image
            # the gradient of its own class score.
            score = logits.gather(1, target[:, None]).sum()
            try:
                (grad,) = torch.autograd.grad(score, leaf, retain_graph=i + 1 < len(targets))
            except RuntimeError as err:
                raise AuditorError(
                    f"The logits do not depend on the target layer through autograd ({err}). "
                    "Choose a layer that feeds the classifier head in model.target_layer."
                ) from None
            gradients.append(reshape(grad) if reshape else grad)
    activations = activations.detach()
    maps = {method.name: torch.stack([method(activations, grad) for grad in gradients]) for method in methods}
    return logits.detach(), maps
