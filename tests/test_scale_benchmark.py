"""The pieces of the scale and end-to-end benchmarks that their figures rest on."""

import torch

from benchmarks.markdown_sections import replace_section
from benchmarks.scale import fit_head, make_images, scale_model


def test_replace_section_appends_then_replaces_only_its_own_markers(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("# Title\n\nHand-written text.\n")
    replace_section(path, "speed", "| a | 1 |")
    replace_section(path, "other", "kept")
    replace_section(path, "speed", "| a | 2 |")
    text = path.read_text()
    assert text.startswith("# Title\n\nHand-written text.\n")
    assert "| a | 2 |" in text and "| a | 1 |" not in text and "kept" in text
    assert text.count("<!-- speed:begin -->") == 1 and text.count("<!-- speed:end -->") == 1


def test_fit_head_folds_the_standardised_fit_into_fc_and_leaves_the_body_alone():
    images, labels = make_images(classes=4, per_class=6, size=32)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    model = scale_model(4)
    body_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    model, accuracy = fit_head(model, x, torch.from_numpy(labels), epochs=50)
    assert accuracy == 1.0  # four colour-coded classes, 24 images: a linear head separates them
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in body_before.items())
    assert not model.training


def test_every_tenth_class_carries_the_corner_mark_on_part_of_its_images():
    images, labels = make_images(classes=11, per_class=20, size=40)
    corner = (images[:, :4, :4] == 255).all(axis=(1, 2, 3))
    assert 0.3 < corner[labels == 0].mean() < 0.9 and 0.3 < corner[labels == 10].mean() < 0.9
    assert not corner[(labels != 0) & (labels != 10)].any()


def test_the_benchmarks_time_every_stage_the_pipeline_times():
    """A stage added to the pipeline but not to the benchmarks would drop out of "after the sweep" unseen."""
    from auditor.pipeline import STAGES
    from benchmarks import end_to_end, scale

    assert set(STAGES) <= set(end_to_end.STAGES)
    assert set(scale.AFTER_SWEEP) == set(STAGES[STAGES.index("sweep_s") + 1 :]) == set(end_to_end.AFTER_SWEEP)
