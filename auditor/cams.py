"""The CAM engine: one forward, a backward through the head only, maps for several classes per image.

`class_maps` hooks the target layer and replaces its output by a detached leaf that requires grad. With every
parameter frozen for the duration, the backbone records no graph at all, and `torch.autograd.grad` with respect
to that leaf runs backward through the layers after the target layer only: no parameter gradient is ever
written. Each method is a small subclass of `CamMethod` that only says how activations and gradients combine.
CAM needs no gradient (it reads the head's linear weights), so a run of CAM alone does no backward at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from auditor.errors import AuditorError
from auditor.hooks import forward_hook

ReshapeFn = Callable[[torch.Tensor], torch.Tensor]


class CamMethod:
    """A class activation map from the target layer's activations A and the class score's gradients G.

    Both are [B, C, h, w]. `weights` returns per-channel weights [B, C, 1, 1] or per-cell weights [B, C, h, w];
    the map is ReLU(sum_c weights_c * A_c), [B, h, w], before any normalisation. Methods that need no backward
    (`needs_gradients = False`) receive the head's linear weights of the class as G instead, [B, C, 1, 1].
    """

    name = "base"
    needs_gradients = True

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return torch.relu((self.weights(activations, gradients) * activations).sum(dim=1))


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where the denominator is 0 (the papers' convention for empty terms)."""
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(numerator), numerator / torch.where(zero, 1.0, denominator))


class CAM(CamMethod):
    """CAM (Zhou et al.): for a global-average-pooling + linear head, the map is sum_c w_kc A_c exactly.

    No backward: the engine passes the head's weights of class k. Equals Grad-CAM times h * w on such a head.
    ReLU'd like the other methods so that all maps show positive evidence only.
    """

    name = "cam"
    needs_gradients = False

    def weights(self, activations, head_weights):
        return head_weights


class GradCAM(CamMethod):
    """Grad-CAM (Selvaraju et al.): channel weights are the spatial mean of the gradients."""

    name = "gradcam"

    def weights(self, activations, gradients):
        return gradients.mean(dim=(2, 3), keepdim=True)


class CounterfactualGradCAM(GradCAM):
    """Counterfactual Grad-CAM (Selvaraju et al., sec. 6): negated gradients show what speaks against the class."""

    name = "counterfactual"

    def weights(self, activations, gradients):
        return super().weights(activations, -gradients)


class GradCAMPlusPlus(CamMethod):
    """Grad-CAM++ (Chattopadhay et al., eq. 19): w_c = sum_ij alpha_ij ReLU(g_ij), alpha = g^2 / (2 g^2 + S_c g^3).

    S_c is the spatial sum of A_c. alpha is computed as 1 / (2 + S_c g) where g != 0, which is the same ratio
    without the g^3 that underflows for small gradients. pytorch-grad-cam adds 1e-6 to the denominator instead,
    which dominates when |g| is below about 1e-3; we keep the paper's formula (0 where it is 0 / 0).
    """

    name = "gradcampp"

    def weights(self, activations, gradients):
        sums = activations.sum(dim=(2, 3), keepdim=True)
        alpha = _safe_divide(torch.ones_like(gradients), 2 + sums * gradients)
        return (alpha * torch.relu(gradients)).sum(dim=(2, 3), keepdim=True)


class XGradCAM(CamMethod):
    """XGrad-CAM (Fu et al.): w_c = sum_ij g_ij A_ij / sum_ij A_ij, gradients weighted by normalised activations."""

    name = "xgradcam"

    def weights(self, activations, gradients):
        sums = activations.sum(dim=(2, 3), keepdim=True)
        return _safe_divide(gradients * activations, sums).sum(dim=(2, 3), keepdim=True)


class HiResCAM(CamMethod):
    """HiResCAM (Draelos & Carin): the element-wise product g * A summed over channels, faithful to the score."""

    name = "hirescam"

    def weights(self, activations, gradients):
        return gradients


class LayerCAM(CamMethod):
    """LayerCAM (Jiang et al.): each cell weighted by its own positive gradient, ReLU(g) * A summed over channels."""

    name = "layercam"

    def weights(self, activations, gradients):
        return torch.relu(gradients)


METHODS: dict[str, type[CamMethod]] = {
    cls.name: cls for cls in (GradCAM, CAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, CounterfactualGradCAM)
}


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

    with forward_hook(layer, hook):
        yield store


def class_maps(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    methods: Sequence[CamMethod],
    reshape: ReshapeFn | None = None,
    pooled: dict | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits [B, K] and, per method, raw maps [2, B, h, w] for the predicted (0) and the true (1) class.

    One forward serves every method and both classes. The backward runs only if some method needs gradients.
    The caller holds `preserved_model_state(model)`; images need no grad. A `pooled` dict receives "features":
    the activations' spatial mean [B, C] (fp32), from the same forward, for the near-duplicate search.
    """
    needs_gradients = any(method.needs_gradients for method in methods)
    with captured_activation(layer) as store, torch.set_grad_enabled(needs_gradients):
        logits = model(images)
        if "activation" not in store:
            raise AuditorError("The target layer never ran in the model's forward; name another model.target_layer.")
        leaf = store["activation"]
        activations = reshape(leaf) if reshape else leaf
        if activations.ndim != 4:
            raise AuditorError(
                f"The target layer's output has shape {tuple(leaf.shape)}, not [B, C, H, W]: choose a spatial layer."
            )
        targets = (logits.argmax(dim=1), labels)
        gradients = _class_gradients(logits, leaf, targets, reshape) if needs_gradients else None
    # Under mixed precision the forward ran in bf16/fp16; the map arithmetic is always fp32.
    activations, logits = activations.detach().float(), logits.detach().float()
    if pooled is not None:
        pooled["features"] = activations.mean(dim=(2, 3))
    gradients = [g.float() for g in gradients] if gradients is not None else None
    head = None
    if not all(method.needs_gradients for method in methods):
        weight = gap_linear_head(model, activations, logits)
        head = [weight[target][:, :, None, None] for target in targets]
    maps = {
        method.name: torch.stack([method(activations, g) for g in (gradients if method.needs_gradients else head)])
        for method in methods
    }
    return logits, maps


def _class_gradients(logits, leaf, targets, reshape) -> list[torch.Tensor]:
    """Gradient of each image's target score with respect to the target layer's output, per target."""
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
    return gradients


def _is_linear(module: nn.Module) -> bool:
    """nn.Linear, also inside a TorchScript model (whose submodules only keep their original class name)."""
    return isinstance(module, nn.Linear) or getattr(module, "original_name", None) == "Linear"


def gap_linear_head(model: nn.Module, activations: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The weight [K, C] of a Linear with logits = W mean_hw(A) + b, checked on this batch; CAM needs this head.

    Checking the equation on the actual numbers, rather than reading the module graph, also catches heads that
    only look like GAP + linear (a norm or an activation between pool and Linear, a class token instead of a pool).
    """
    pooled = activations.mean(dim=(2, 3))
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if _is_linear(module) and weight is not None and tuple(weight.shape) == (logits.shape[1], pooled.shape[1]):
            weight = weight.detach().to(pooled.dtype)
            expected = torch.nn.functional.linear(pooled, weight, module.bias)
            # Rounding grows with the size of the summed terms, not of their (possibly cancelling) sum.
            scale = (pooled.abs() @ weight.abs().T).max().item()
            if torch.allclose(expected, logits.to(pooled.dtype), rtol=0.0, atol=1e-4 * scale + 1e-6):
                return weight
    raise AuditorError(
        "CAM needs a head that is global average pooling of the target layer followed by one Linear layer "
        f"(logits = W * mean(A) + b); this model's target layer ({tuple(activations.shape[1:])}) does not reach its "
        "logits that way. Use gradcam (which equals CAM up to scale on such heads) or another method in "
        "sweep.methods, or name the pooled layer in model.target_layer."
    )
