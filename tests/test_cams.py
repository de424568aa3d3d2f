"""Grad-CAM: golden values worked out by hand, and agreement with independent implementations."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from auditor.cams import GradCAM, captured_activation, class_maps, preserved_model_state


class Identity2x2(nn.Module):
    """A 'feature layer' that passes its input on, so the activations are exactly the input."""

    def forward(self, x):
        return x


class FlattenHead(nn.Module):
    """feat -> flatten -> linear: gradients differ per position, unlike a GAP head."""

    def __init__(self, weight):
        super().__init__()
        self.feat = Identity2x2()
        self.fc = nn.Linear(8, weight.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(weight)

    def forward(self, x):
        return self.fc(torch.flatten(self.feat(x), 1))


def test_gradcam_golden_flatten_head():
    # Activations A: 2 channels of 2 x 2.
    a = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[0.0, 1.0], [3.0, 0.0]]]])
    # Class 0 score = 1*A0[0,0] + 1*A0[0,1] + 2*A1[1,0] (weights flattened channel-major).
    # Gradients: G0 = [[1,1],[0,0]] -> mean 0.5; G1 = [[0,0],[2,0]] -> mean 0.5.
    # Map = ReLU(0.5*A0 + 0.5*A1) = [[0.5, 1.5], [1.5, 0.5]].
    # Class 1 score = -1*A0[1,1] + 1*A1[0,0]: G0 mean -0.25, G1 mean 0.25.
    # Map = ReLU(-0.25*A0 + 0.25*A1) = ReLU([[-0.25, -0.25], [0.75, -0.25]]) = [[0, 0], [0.75, 0]].
    weight = torch.tensor([[1, 1, 0, 0, 0, 0, 2, 0], [0, 0, 0, -1, 1, 0, 0, 0]], dtype=torch.float32)
    model = FlattenHead(weight)
    with preserved_model_state(model):
        logits, maps = class_maps(model, model.feat, a, torch.tensor([1]), [GradCAM()])
    # logits: class 0 = 1 + 2 + 6 = 9; class 1 = -1 + 0 = -1 -> predicted 0, true 1.
    assert logits.tolist() == [[9.0, -1.0]]
    expected_pred = torch.tensor([[0.5, 1.5], [1.5, 0.5]])
    expected_true = torch.tensor([[0.0, 0.0], [0.75, 0.0]])
    torch.testing.assert_close(maps["gradcam"][0, 0], expected_pred)
    torch.testing.assert_close(maps["gradcam"][1, 0], expected_true)


def test_gradcam_golden_gap_head_equals_cam():
    # GAP + linear: gradient at every position is w_c / (h*w), so Grad-CAM = CAM / (h*w).
    a = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 4.0]]]])
    model = nn.Sequential(Identity2x2(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[3].weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, 2.0]]))
    with preserved_model_state(model):
        logits, maps = class_maps(model, model[0], a, torch.tensor([0]), [GradCAM()])
    # logits = [(2 + 4)/4, (-2 + 8)/4] = [1.5, 1.5]: argmax ties to class 0.
    cam_class0 = torch.tensor([[2.0, 0.0], [0.0, 4.0]]) / 4
    torch.testing.assert_close(maps["gradcam"][0, 0], cam_class0)
    torch.testing.assert_close(maps["gradcam"][1, 0], cam_class0)


def _resnet18(num_classes=5):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    # Random BN statistics so the network is not trivially symmetric.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _minmax(maps: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's normalisation: subtract the minimum, divide by the maximum."""
    maps = maps - maps.min(axis=(1, 2), keepdims=True)
    return maps / (1e-7 + maps.max(axis=(1, 2), keepdims=True))


@pytest.mark.parametrize("size", [64, 96])
def test_matches_pytorch_grad_cam_on_resnet18_pred_and_true(size):
    """Same maps as pytorch-grad-cam for the predicted and the true class, after the same normalisation.

    pytorch-grad-cam min-max normalises each map at the layer's resolution, resizes it bilinearly with OpenCV and
    min-max normalises again; ours go through the same steps with torch's bilinear (half-pixel centres, as OpenCV).
    """
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _resnet18()
    torch.manual_seed(size)
    images = torch.randn(4, 3, size, size)
    labels = torch.tensor([4, 0, 2, 1])
    with preserved_model_state(model):
        logits, maps = class_maps(model, model.layer4, images, labels, [GradCAM()])
    predicted = logits.argmax(1)
    assert not torch.equal(predicted, labels)  # the two targets really differ
    with pytorch_grad_cam.GradCAM(model=model, target_layers=[model.layer4]) as reference:
        for k, targets in enumerate((predicted, labels)):
            theirs = reference(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
            native = torch.from_numpy(_minmax(maps["gradcam"][k].numpy()))
            ours = torch.nn.functional.interpolate(native[:, None], size=(size, size), mode="bilinear", align_corners=False)
            assert np.abs(_minmax(ours[:, 0].numpy()) - theirs).max() < 1e-4


def test_matches_captum_layer_gradcam():
    captum_attr = pytest.importorskip("captum.attr")
    model = _resnet18(num_classes=3)
    torch.manual_seed(3)
    images = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([2, 1])
    with preserved_model_state(model):
        logits, maps = class_maps(model, model.layer4, images, labels, [GradCAM()])
    layer_gc = captum_attr.LayerGradCam(model, model.layer4)
    for k, targets in enumerate((logits.argmax(1), labels)):
        theirs = layer_gc.attribute(images, target=targets, relu_attributions=True)[:, 0].detach()
        torch.testing.assert_close(maps["gradcam"][k], theirs, atol=1e-5, rtol=1e-4)


def test_no_hook_left_and_state_restored_also_after_error():
    model = _resnet18()
    model.train()
    model.layer1.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    with preserved_model_state(model):
        class_maps(model, model.layer4, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), [GradCAM()])
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training and model.layer4.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())  # the backward never reached parameters

    with pytest.raises(RuntimeError):
        with preserved_model_state(model):
            class_maps(model, model.layer4, torch.randn(2, 5, 32, 32), torch.tensor([0, 1]), [GradCAM()])
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags


def test_backward_runs_through_the_head_only():
    """The backbone records no graph: its modules see inputs that need no grad."""
    model = _resnet18()
    seen = {}

    def spy(name):
        return lambda module, inputs, output: seen.__setitem__(name, output.requires_grad)

    handles = [model.layer3.register_forward_hook(spy("layer3")), model.fc.register_forward_hook(spy("fc"))]
    with preserved_model_state(model):
        class_maps(model, model.layer4, torch.randn(1, 3, 32, 32), torch.tensor([0]), [GradCAM()])
    for handle in handles:
        handle.remove()
    assert seen == {"layer3": False, "fc": True}


def test_in_place_op_after_target_layer_is_safe():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with preserved_model_state(model):
        logits, maps = class_maps(model, model[0], torch.randn(2, 1, 6, 6), torch.tensor([0, 1]), [GradCAM()])
    assert maps["gradcam"].shape == (2, 2, 4, 4)
    assert torch.isfinite(maps["gradcam"]).all()


def test_captured_activation_removes_hook_on_error():
    layer = nn.Conv2d(1, 1, 1)
    with pytest.raises(ValueError):
        with captured_activation(layer):
            raise ValueError("boom")
    assert not layer._forward_hooks
