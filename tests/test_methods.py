"""Every CAM method: golden values worked out by hand, and agreement with pytorch-grad-cam and Captum."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from auditor.cams import METHODS, CamMethod, class_maps, get_method, preserved_model_state
from auditor.config import Config
from auditor.errors import AuditorError
from auditor.runs import MAP_KINDS
from auditor.sweep import audit_batch, metric_prefix

# Activations A: 2 channels of 2 x 2; channel sums S0 = 4, S1 = 6.
A = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[0.0, 1.0], [3.0, 2.0]]]])
# A flatten + linear head: the gradient of a class score with respect to A is that class's weight row, reshaped.
# Class 0: G0 = [[1, 1], [0, 0]], G1 = [[0, 0], [2, 0]]   -> score 1 + 2 + 6 = 9 (predicted)
# Class 1: G0 = [[0, 0], [0, -1]], G1 = [[0, 1], [0, 1]]  -> score -1 + 1 + 2 = 2 (the true label)
FLAT_WEIGHTS = torch.tensor([[1, 1, 0, 0, 0, 0, 2, 0], [0, 0, 0, -1, 0, 1, 0, 1]], dtype=torch.float32)

GOLDEN = {  # method: (map of class 0, map of class 1), by hand from A and G above
    # w = mean(G): class 0 (0.5, 0.5) -> 0.5 (A0 + A1); class 1 (-0.25, 0.5) -> ReLU(-0.25 A0 + 0.5 A1).
    "gradcam": ([[0.5, 1.5], [1.5, 1.5]], [[0.0, 0.0], [1.5, 0.75]]),
    # w = -mean(G): class 0 -> -0.5 (A0 + A1) <= 0 everywhere; class 1 -> ReLU(0.25 A0 - 0.5 A1).
    "counterfactual": ([[0.0, 0.0], [0.0, 0.0]], [[0.25, 0.0], [0.0, 0.0]]),
    # w = sum(G * A) / S: class 0 (3/4, 6/6) -> 0.75 A0 + A1; class 1 (-1/4, 3/6) -> as Grad-CAM.
    "xgradcam": ([[0.75, 2.5], [3.0, 2.75]], [[0.0, 0.0], [1.5, 0.75]]),
    # w = sum ReLU(g) / (2 + S g): class 0 (2/6, 2/14) -> A0/3 + A1/7; class 1 (0, 2/8) -> A1/4.
    "gradcampp": ([[1 / 3, 17 / 21], [3 / 7, 13 / 21]], [[0.0, 0.25], [0.75, 0.5]]),
    # sum_c G * A: class 0 [[1, 2], [6, 0]]; class 1 [[0, 0], [0, -1]] + [[0, 1], [0, 2]] = [[0, 1], [0, 1]].
    "hirescam": ([[1.0, 2.0], [6.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]),
    # sum_c ReLU(G) * A: class 0 as HiResCAM (G >= 0); class 1 drops the -1 of channel 0: [[0, 1], [0, 2]].
    "layercam": ([[1.0, 2.0], [6.0, 0.0]], [[0.0, 1.0], [0.0, 2.0]]),
}


class Features(nn.Module):
    """A 'feature layer' that passes its input on, so the activations are exactly the input."""

    def forward(self, x):
        return x


class FlattenHead(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.feat = Features()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(weight)

    def forward(self, x):
        return self.fc(torch.flatten(self.feat(x), 1))


def gap_head(weight, bias=None):
    model = nn.Sequential(Features(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2, bias=bias is not None))
    with torch.no_grad():
        model[3].weight.copy_(weight)
        if bias is not None:
            model[3].bias.copy_(bias)
    return model


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_values_on_flatten_head(name):
    model = FlattenHead(FLAT_WEIGHTS)
    with preserved_model_state(model):
        logits, maps = class_maps(model, model.feat, A, torch.tensor([1]), [get_method(name)])
    assert logits.tolist() == [[9.0, 2.0]]  # predicted 0, true 1
    for k, expected in enumerate(GOLDEN[name]):
        torch.testing.assert_close(maps[name][k, 0], torch.tensor(expected))


def test_methods_differ_on_the_golden_case():
    """Each golden pair is distinct, so a method wired to another's formula fails its own golden test."""
    pairs = [tuple(map(tuple, np.array(v).reshape(2, -1))) for v in GOLDEN.values()]
    assert len(set(pairs)) == len(pairs)


def test_cam_golden_and_equal_to_gradcam_times_cells():
    # CAM of class k = sum_c W_kc A_c: class 0 A0 + A1 = [[1, 3], [3, 3]]; class 1 ReLU(-A0 + 2 A1) = [[0, 0], [6, 3]].
    # Logits = cell means (+ bias): class 0 2.5 + 0.5 = 3, class 1 2 - 1 = 1: predicted 0, true 1.
    model = gap_head(torch.tensor([[1.0, 1.0], [-1.0, 2.0]]), bias=torch.tensor([0.5, -1.0]))
    with preserved_model_state(model):
        logits, maps = class_maps(model, model[0], A, torch.tensor([1]), [get_method("cam"), get_method("gradcam")])
    assert logits.tolist() == [[3.0, 1.0]]
    torch.testing.assert_close(maps["cam"][0, 0], torch.tensor([[1.0, 3.0], [3.0, 3.0]]))
    torch.testing.assert_close(maps["cam"][1, 0], torch.tensor([[0.0, 0.0], [6.0, 3.0]]))
    # The gradient of a GAP + linear head is W_k / (h w) at every cell: Grad-CAM = CAM / 4.
    torch.testing.assert_close(maps["gradcam"], maps["cam"] / 4)


def test_cam_refuses_a_head_that_is_not_gap_plus_linear():
    model = FlattenHead(FLAT_WEIGHTS)
    with preserved_model_state(model), pytest.raises(AuditorError, match="global average pooling"):
        class_maps(model, model.feat, A, torch.tensor([1]), [get_method("cam")])
    # A nonlinearity between the pool and the Linear breaks the identity too.
    mlp = nn.Sequential(Features(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2))
    with preserved_model_state(mlp), pytest.raises(AuditorError, match="global average pooling"):
        class_maps(mlp, mlp[0], torch.randn(2, 2, 3, 3), torch.tensor([0, 1]), [get_method("cam")])


def test_cam_alone_runs_no_backward():
    model = gap_head(torch.tensor([[1.0, 1.0], [-1.0, 2.0]]))
    grad_mode = []
    model[3].register_forward_hook(lambda module, inputs, output: grad_mode.append(torch.is_grad_enabled()))
    for methods, expected in ((["cam"], False), (["cam", "gradcam"], True)):
        grad_mode.clear()
        with preserved_model_state(model):
            class_maps(model, model[0], A, torch.tensor([1]), [get_method(n) for n in methods])
        assert grad_mode == [expected]


def test_registry_names_every_method_once():
    assert set(METHODS) == {"cam", "gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "counterfactual"}
    assert all(issubclass(cls, CamMethod) and cls.name == name for name, cls in METHODS.items())
    with pytest.raises(AuditorError, match="Known: cam, counterfactual"):
        get_method("scorecam")


# ---------------------------------------------------------------- agreement with independent implementations


def _calibrated(model, size=64):
    """BatchNorm statistics measured on random images, so activations have the unit scale of a trained network.

    With default statistics a random deep network's activations shrink to ~1e-8 (pytorch-grad-cam's epsilons,
    1e-7 in XGradCAM, then dominate) or, with made-up statistics, lose their spatial variation (min-max
    normalisation then magnifies float rounding).
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(99)))
    return model.eval()


def _resnet18():
    torch.manual_seed(0)
    model = _calibrated(torchvision.models.resnet18(weights=None, num_classes=5))
    return model, model.layer4, model.fc


def _mobilenet_v2():
    torch.manual_seed(2)
    model = _calibrated(torchvision.models.mobilenet_v2(weights=None, num_classes=5, width_mult=0.5))
    return model, model.features, model.classifier[1]


ARCHITECTURES = {"resnet18": _resnet18, "mobilenet_v2": _mobilenet_v2}
_BUILT: dict = {}


def _setup(arch):
    """Model, layer, images, labels and our maps for every method, built once per architecture.

    The head's weights are scaled up so gradients are about 1 or more: pytorch-grad-cam's Grad-CAM++ adds 1e-6 to a
    denominator of order g^2, which would otherwise dominate (we follow the paper's formula without it).
    """
    if arch not in _BUILT:
        model, layer, head = ARCHITECTURES[arch]()
        with torch.no_grad():
            head.weight.mul_(1000)
        torch.manual_seed(7)
        images = torch.randn(4, 3, 64, 64)
        labels = torch.tensor([4, 0, 2, 1])
        with preserved_model_state(model):
            logits, maps = class_maps(model, layer, images, labels, [cls() for cls in METHODS.values()])
        assert not torch.equal(logits.argmax(1), labels)  # the two targets really differ
        _BUILT[arch] = model, layer, images, labels, logits, maps
    return _BUILT[arch]


def _minmax(maps: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's normalisation: subtract the minimum, divide by the maximum."""
    maps = maps - maps.min(axis=(1, 2), keepdims=True)
    return maps / (1e-7 + maps.max(axis=(1, 2), keepdims=True))


def as_pytorch_grad_cam_shows(maps: torch.Tensor, size: int) -> np.ndarray:
    """Their pipeline on our maps: min-max at layer resolution, bilinear resize (half-pixel centres), min-max."""
    native = torch.from_numpy(_minmax(maps.numpy()))
    resized = torch.nn.functional.interpolate(native[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return _minmax(resized[:, 0].numpy())


class Negated:
    """A pytorch-grad-cam target whose gradient is the class score's, negated: their counterfactual Grad-CAM."""

    def __init__(self, category):
        self.category = category

    def __call__(self, output):
        return -output[..., self.category]


# Our method -> (pytorch-grad-cam class, target factory). CAM is checked against their Grad-CAM: on a GAP + linear
# head the two are equal up to scale, which the normalisation removes.
REFERENCES = {
    "cam": ("GradCAM", None),
    "gradcam": ("GradCAM", None),
    "gradcampp": ("GradCAMPlusPlus", None),
    "xgradcam": ("XGradCAM", None),
    "hirescam": ("HiResCAM", None),
    "layercam": ("LayerCAM", None),
    "counterfactual": ("GradCAM", Negated),
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_pytorch_grad_cam(arch, name):
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, layer, images, labels, logits, maps = _setup(arch)
    reference_cls, target = REFERENCES[name]
    target = target or ClassifierOutputTarget
    with getattr(pytorch_grad_cam, reference_cls)(model=model, target_layers=[layer]) as reference:
        for k, classes in enumerate((logits.argmax(1), labels)):
            theirs = reference(input_tensor=images, targets=[target(int(c)) for c in classes])
            ours = as_pytorch_grad_cam_shows(maps[name][k], images.shape[-1])
            assert np.abs(ours - theirs).max() < 1e-4
            assert theirs.max() > 0.5 or name == "counterfactual"  # not two blank maps agreeing


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_gradcam_matches_captum(arch):
    captum_attr = pytest.importorskip("captum.attr")
    model, layer, images, labels, logits, maps = _setup(arch)
    layer_gc = captum_attr.LayerGradCam(model, layer)
    for k, classes in enumerate((logits.argmax(1), labels)):
        theirs = layer_gc.attribute(images, target=classes, relu_attributions=True)[:, 0].detach()
        torch.testing.assert_close(maps["gradcam"][k], theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_cam_is_gradcam_times_cells_on_gap_linear_heads(arch):
    _, _, _, _, _, maps = _setup(arch)
    cells = maps["gradcam"].shape[-1] * maps["gradcam"].shape[-2]
    assert maps["cam"].amax() > 0
    torch.testing.assert_close(maps["cam"], maps["gradcam"] * cells, rtol=1e-4, atol=1e-5 * maps["cam"].amax().item())


# ---------------------------------------------------------------- the sweep records every method


def test_sweep_records_metrics_and_raw_scale_for_every_method():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    names = ["hirescam", *sorted(set(METHODS) - {"hirescam"})]
    cfg = Config()
    cfg.sweep.methods, cfg.sweep.map_size = names, 4
    images = torch.randn(2, 3, 8, 8)
    batch = {"image": images, "mask": torch.zeros(2, 8, 8, dtype=torch.bool), "has_mask": torch.tensor([False, False]),
             "label": torch.tensor([0, 2]), "index": torch.tensor([0, 1])}
    methods = [get_method(n) for n in names]
    with preserved_model_state(model):
        fields = audit_batch(model, model[1], batch, methods, cfg)
        _, maps = class_maps(model, model[1], images, batch["label"], methods)
    for name in names:
        prefix = metric_prefix(name, names[0])
        assert prefix == ("" if name == "hirescam" else f"{name}_")
        for k, kind in enumerate(MAP_KINDS):
            np.testing.assert_allclose(fields[f"{prefix}{kind}_cam_max"], maps[name][k].amax(dim=(1, 2)), rtol=1e-6)
            assert f"{prefix}{kind}_energy_in_mask" in fields
        stored = fields["maps" if name == "hirescam" else f"maps_{name}"]
        assert stored.shape == (2, 2, 4, 4)
        assert np.all((np.abs(stored.max(axis=(2, 3)) - 1) < 1e-3) | (stored.max(axis=(2, 3)) == 0))
    assert fields["cam_pred_cam_max"].max() > 0
