"""Per-family knowledge: which layer to explain, and how to turn its output into a [B, C, H, W] map.

Most CNNs need no rule: the last module with a spatial output (see `models.find_target_layer`) is the usual
choice. Three torchvision families do:
  VGG    the `features` stack: its last 4-D module, the AdaptiveAvgPool2d(7), only resamples it (and on small
         inputs blows a 1 x 1 map up to 7 x 7).
  ViT    the last encoder block's first LayerNorm: its tokens still feed the attention that builds the class
         token the head reads (the encoder's own output reaches the head through the class token only, so its
         patch tokens have zero gradient). Tokens [B, 1 + N, C] become a grid by `TokensToGrid`.
  Swin   the final LayerNorm `norm`: it feeds permute -> average pool -> head, so it plays the role of ResNet's
         layer4 (and CAM applies). torchvision's Swin is channels-last, [B, H, W, C]: `ChannelsLast`.

The same reasons give the rules for timm and Hugging Face transformers models (matched by duck typing, so
neither library is imported here):
  timm ViT / DeiT / ...  `blocks.<last>.norm1`; the model's `num_prefix_tokens` (class, distillation, register
         tokens) are dropped. ResNet, ConvNeXt, EfficientNet, RegNet need no rule.
  timm Swin (output_fmt NHWC)  the final `norm`, channels-last like everything after the patch projection.
  HF ViT / DeiT / ...  the last block's `layernorm_before`; HF Swin `model.<base>.layernorm`
         (tokens [B, N, C], no class token). ResNet, ConvNeXt need no rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import VGG, SwinTransformer, VisionTransformer

from auditor.cams import ReshapeFn
from auditor.errors import AuditorError
from auditor.hooks import forward_hook

MAX_PREFIX_TOKENS = 8  # class, distillation and register tokens that may precede the patch tokens


class HuggingFaceLogits(nn.Module):
    """A transformers image classifier as a module that returns its logits tensor (the output's `.logits`), as the
    sweep and the CAMs need. Its layers keep their Hugging Face names under `model.`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.")


def _timm_channels_last(model: nn.Module) -> bool:
    return _is_timm(model) and getattr(model, "output_fmt", "NCHW") == "NHWC"


@dataclass(frozen=True)
class ChannelsLast:
    """[B, H, W, C] -> [B, C, H, W]."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


@dataclass(frozen=True)
class TokensToGrid:
    """Tokens [B, prefix + h * w, C] -> [B, C, h, w]: the prefix (class token ...) dropped, the grid from the count.

    The grid has the input's aspect ratio `aspect` = (a, b) in lowest terms, so h * w = a * b * k^2: the count alone
    fixes k, and any input size or patch size works (no hard-coded 14 x 14).
    """

    prefix: int
    aspect: tuple[int, int] = (1, 1)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, self.prefix:]
        height, width = grid_shape(patches.shape[1], self.aspect)
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


def reduced_aspect(height: int, width: int) -> tuple[int, int]:
    divisor = math.gcd(height, width)
    return height // divisor, width // divisor


def grid_shape(count: int, aspect: tuple[int, int]) -> tuple[int, int]:
    """(h, w) with h * w == count and h : w == aspect; AuditorError when the count admits no such grid."""
    a, b = aspect
    k = math.isqrt(count // (a * b)) if count >= a * b else 0
    if k == 0 or a * b * k * k != count:
        raise AuditorError(
            f"{count} tokens do not form a grid with the input's aspect ratio {a}:{b}; choose another "
            "model.target_layer (a layer whose tokens are image patches)."
        )
    return a * k, b * k


def prefix_tokens(count: int, aspect: tuple[int, int]) -> int:
    """The fewest leading tokens whose removal leaves a grid: 1 for a class token (197 = 1 + 14 x 14)."""
    for prefix in range(min(count, MAX_PREFIX_TOKENS + 1)):
        try:
            grid_shape(count - prefix, aspect)
        except AuditorError:
            continue
        return prefix
    raise AuditorError(
        f"{count} tokens are not a patch grid (with up to {MAX_PREFIX_TOKENS} class or register tokens) for the "
        f"input's aspect ratio {aspect[0]}:{aspect[1]}; choose another model.target_layer."
    )


def family_target_layer(model: nn.Module) -> str | None:
    """The layer to explain for the torchvision families that need a rule (module docstring), else None."""
    if isinstance(model, VisionTransformer):
        last_block = list(model.encoder.layers.named_children())[-1][0]
        return f"encoder.layers.{last_block}.ln_1"
    if isinstance(model, SwinTransformer):
        return "norm"
    if isinstance(model, VGG):
        return "features"
    if isinstance(model, HuggingFaceLogits):
        return _huggingface_target_layer(model)
    if _timm_channels_last(model) and isinstance(getattr(model, "norm", None), nn.Module):
        return "norm"
    blocks = getattr(model, "blocks", None)
    if _is_timm(model) and hasattr(model, "num_prefix_tokens") and isinstance(blocks, (nn.Sequential, nn.ModuleList)) \
            and len(blocks) and hasattr(blocks[-1], "norm1"):
        return f"blocks.{len(blocks) - 1}.norm1"
    return None


def _huggingface_target_layer(wrapper: HuggingFaceLogits) -> str | None:
    base = f"model.{wrapper.model.base_model_prefix}"
    modules = dict(wrapper.named_modules())
    if str(wrapper.model.config.model_type).startswith("swin") and f"{base}.layernorm" in modules:
        return f"{base}.layernorm"
    blocks = [name for name in modules if name.startswith(f"{base}.") and name.endswith(".layernorm_before")]
    return blocks[-1] if blocks else None  # the last block's (named_modules lists the blocks in order)


def layer_reshape(model: nn.Module, layer_name: str, layer: nn.Module, example: torch.Tensor) -> ReshapeFn | None:
    """How to read `layer`'s output as [B, C, H, W]: None when it already is, else a token or channels-last reshape.

    Runs the example once to see the output's shape; the grid of tokens follows from the example's aspect ratio.
    """
    shape = _output_shape(model, layer, example)
    aspect = reduced_aspect(*example.shape[-2:])
    if len(shape) == 3:
        known = getattr(model, "num_prefix_tokens", None) if _is_timm(model) else None
        return TokensToGrid(known if isinstance(known, int) else prefix_tokens(shape[1], aspect), aspect)
    if len(shape) == 4 and _channels_last(model, layer_name):
        return ChannelsLast()
    return None


def _channels_last(model: nn.Module, layer_name: str) -> bool:
    """torchvision's Swin is channels-last from the patch embedding's Permute (features.0.1) to `norm`; timm's
    NHWC models (Swin) everywhere after the patch projection's convolution."""
    if isinstance(model, SwinTransformer):
        return layer_name in ("features", "norm") or (layer_name.startswith("features.") and layer_name != "features.0.0")
    return _timm_channels_last(model) and not layer_name.startswith("patch_embed.proj")


def _output_shape(model: nn.Module, layer: nn.Module, example: torch.Tensor) -> tuple[int, ...]:
    shapes = []

    def record(module, inputs, output):
        shapes.append(tuple(output.shape) if isinstance(output, torch.Tensor) else ())

    with forward_hook(layer, record), torch.no_grad():
        model(example)
    if not shapes:
        raise AuditorError("The target layer never ran in the model's forward; name another model.target_layer.")
    return shapes[-1]
