"""Config loading: YAML plus dotted overrides, and a message that names the fix for every mistake."""

from __future__ import annotations

import pytest
import yaml

from auditor.config import Config, config_from_dict, load_config
from auditor.errors import ConfigError


def test_defaults_yaml_and_overrides(tmp_path):
    assert load_config() == Config()
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump({"sweep": {"batch_size": 8, "methods": ["gradcam"]}, "data": {"root": "x"}}))
    cfg = load_config(path, ["sweep.batch_size=64", "data.resize=[224, 200]", "attention.iou_threshold=1",
                             "model.classes=[cat, dog]", "data.limit="])
    assert cfg.sweep.batch_size == 64  # the override wins over the file
    assert cfg.data.root == "x" and cfg.data.resize == [224, 200] and cfg.data.limit is None
    assert cfg.attention.iou_threshold == 1.0 and isinstance(cfg.attention.iou_threshold, float)
    assert cfg.model.classes == ["cat", "dog"]


def test_override_into_an_empty_section(tmp_path):
    (tmp_path / "audit.yaml").write_text("sweep:\nrun:\n  fail_on: high\n")
    cfg = load_config(tmp_path / "audit.yaml", ["sweep.batch_size=3"])
    assert cfg.sweep.batch_size == 3 and cfg.run.fail_on == "high"


def test_numbers_where_text_is_expected_become_text():
    cfg = load_config(None, ["model.target_layer=6", "model.classes=[0, 1, 2]"])
    assert cfg.model.target_layer == "6" and cfg.model.classes == ["0", "1", "2"]


@pytest.mark.parametrize("overrides, message", [
    (["sweep.batch_sise=4"], "Unknown config key in section 'sweep': 'batch_sise'. Did you mean 'batch_size'?"),
    (["sweeps.batch_size=4"], "Unknown config section: 'sweeps'. Did you mean 'sweep'?"),
    (["batch_size=4"], "must look like section.key=value"),
    (["sweep.batch_size=many"], "sweep.batch_size must be of type int, not 'many'"),
    (["sweep.batch_size=true"], "sweep.batch_size must be of type int, not True"),
    (["sweep.batch_size=2.5"], "sweep.batch_size must be of type int, not 2.5"),
    (["data.mean=0.5"], "data.mean must be a list, not 0.5"),
    (["data.mean=[0.5, x, 0.5]"], r"data.mean\[1\] must be of type float, not 'x'"),
    (["model.factory_kwargs=3"], "model.factory_kwargs must be a mapping"),
    (["run.fail_on=sometimes"], "run.fail_on must be one of high, medium, low, never, not 'sometimes'"),
    (["data.std=[0.2, 0.0, 0.2]"], "data.std values must be above 0"),
    (["data.mean=[0.5]"], "data.mean and data.std need 3 values each"),
    (["data.resize=[1, 2, 3]"], r"data.resize must be N \(the shorter side\) or \[height, width\]"),
    (["data.crop=0"], "data.resize and data.crop must be 1 pixel or more"),
    (["report.thumb_px=8"], "report.thumb_px must be between 16 and 512"),
])
def test_mistakes_raise_a_config_error_naming_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_grayscale_needs_one_mean_and_std():
    cfg = load_config(None, ["data.grayscale=true", "data.mean=[0.5]", "data.std=[0.25]"])
    assert cfg.data.mean == [0.5]


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("sweep: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="section 'sweep' must be a mapping"):
        config_from_dict({"sweep": 3})


def test_round_trip_through_the_manifest():
    cfg = load_config(None, ["sweep.batch_size=7", "data.resize=[10, 12]"])
    assert config_from_dict(cfg.to_dict()) == cfg


def test_a_retired_key_in_an_older_runs_manifest_is_left_out_with_a_warning(caplog):
    """Run directories keep their config in manifest.json: one written before a key was retired still loads."""
    from auditor.config import RETIRED

    section, name = next(iter(RETIRED))
    with caplog.at_level("WARNING", logger="auditor.config"):
        cfg = config_from_dict({section: {name: 10.0, "label_error_min_count": 4}})
    assert cfg.findings.label_error_min_count == 4 and not hasattr(cfg.findings, name)
    assert f"{section}.{name} is no longer used" in caplog.text
    with pytest.raises(ConfigError, match="Unknown config key"):
        config_from_dict({section: {name + "_typo": 1}})
