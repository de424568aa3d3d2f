"""Model loading (torchvision name + state_dict, TorchScript, factory) and target-layer discovery."""

import warnings
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from torch import nn

from auditor.cli import main
from auditor.config import ModelConfig, load_config
from auditor.errors import AuditorError
from auditor.models import ChildrenChain, find_target_layer, load_model
from auditor.runs import load_run


def _small_resnet(num_classes=2):
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=num_classes).eval()


def test_arch_checkpoint_takes_class_count_from_checkpoint(tmp_path):
    model = _small_resnet(num_classes=7)
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = load_model(ModelConfig(arch="resnet18", checkpoint=str(path)))
    assert loaded.fc.out_features == 7
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), model(x))


def test_target_layer_found_automatically():
    name, layer = find_target_layer(_small_resnet(), torch.randn(1, 3, 64, 64))
    assert name == "layer4"
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    name, _ = find_target_layer(model, torch.randn(1, 3, 8, 8))
    assert name == "1"  # the ReLU after the last conv; the 1 x 1 pooled map is not spatial


def _scripted(model, path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model), str(path))


def test_torchscript_audit_matches_eager_predictions(image_folder, tmp_path):
    data, masks = image_folder
    model = _small_resnet()
    _scripted(model, tmp_path / "model.ts")
    out = tmp_path / "run"
    code = main(["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.torchscript",
                 str(tmp_path / "model.ts"), "--model.target_layer", "layer4", "--out", str(out)])
    assert code == 0
    run = load_run(out)
    from auditor.data import AuditDataset, build_samples
    from auditor.config import DataConfig

    cfg = DataConfig(root=str(data))
    samples, _ = build_samples(cfg, None)
    images = torch.stack([AuditDataset(samples, cfg)[i]["image"] for i in range(len(samples))])
    with torch.no_grad():
        eager = model(images).argmax(1).tolist()
    by_id = dict(zip(run.records["id"], run.records["pred_idx"]))
    assert [by_id[s.id] for s in samples] == eager


class NotAChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc((self.a(x) + self.b(x)).mean(dim=(2, 3)))


def test_torchscript_that_is_not_a_chain_is_refused(tmp_path):
    _scripted(NotAChain().eval(), tmp_path / "model.ts")
    script = torch.jit.load(str(tmp_path / "model.ts"))
    with pytest.raises(AuditorError, match=r"torch\.export\.export\(model.*model\.exported") as caught:
        ChildrenChain.from_script(script, torch.randn(1, 3, 8, 8))
    assert "\n" not in str(caught.value)  # one paragraph


def test_example_configs_are_valid():
    for path in sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.run.out_dir.startswith("reports/"), path
        assert yaml.safe_load(path.read_text())  # not empty
