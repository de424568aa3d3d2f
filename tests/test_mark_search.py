"""Repeated marks found from the pixels (auditor.mark_search) and judged (auditor.findings.repeated_mark), by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditor.findings import Finding
from auditor.findings.repeated_mark import mark_finding
from auditor.mark_search import Mark, _fold, affordable_tests, repeated_marks
from tests.test_findings import CFG
from tests.test_findings_trust import CornerDetector, objects


def test_a_mark_half_the_class_carries_is_found_at_its_place_with_its_carriers():
    rng = np.random.default_rng(0)
    images = objects(40, rng, centred=False, watermark=False)
    images[::2, :, :4, -4:] = 1.0  # every other image carries a 4 x 4 mark in the top-right corner
    references = objects(64, rng, centred=False, watermark=False)
    (mark,) = repeated_marks(images, references, window=0.25, tolerance=0.1, min_share=0.1, most=2)
    assert (mark.top, mark.left, mark.side) == (0, 12, 4)
    assert sorted(mark.carriers) == list(range(0, 40, 2)) and len(mark.carriers) / 40 == 0.5
    assert mark.reference_share == 0.0


@pytest.mark.parametrize("centred", [True, False])
def test_a_clean_class_of_varied_objects_has_no_mark(centred):
    """Objects differ from image to image and the background is noise every class shares: nothing repeats."""
    rng = np.random.default_rng(1)
    images, references = objects(40, rng, centred, False), objects(64, rng, False, False)
    assert repeated_marks(images, references, window=0.25, tolerance=0.1, min_share=0.1, most=2) == []


def test_a_background_every_class_shares_is_no_mark_and_a_tint_is_one():
    """A flat background: the class's windows match one another but match the other classes' too. Tinted only
    in the class, every window matches its own images: one mark, the same images in every window."""
    images, references = torch.zeros(30, 1, 16, 16), torch.zeros(50, 1, 16, 16)
    images[:, :, 6:10, 6:10], references[:, :, 6:10, 6:10] = torch.rand(30, 1, 4, 4), torch.rand(50, 1, 4, 4)
    assert repeated_marks(images, references, window=0.25, tolerance=0.1, min_share=0.1, most=2) == []
    tinted = images.clone()
    tinted[:, :, :6] += 0.5  # the top six rows
    assert len(repeated_marks(tinted, references, window=0.25, tolerance=0.1, min_share=0.1, most=2)) == 1


def test_copies_of_one_image_are_no_mark_but_the_same_mark_on_different_images_is():
    """Six copies of one photo match in every window; they are near-duplicates (another finding's business), and a
    mark test on them would say nothing about a mark. Six different images carrying one mark still give it."""
    rng = np.random.default_rng(3)
    images = objects(30, rng, centred=False, watermark=False)
    references = objects(64, rng, centred=False, watermark=False)
    copied = images.clone()
    copied[:6] = copied[0]
    assert repeated_marks(copied, references, window=0.25, tolerance=0.1, min_share=0.1, most=2) == []
    marked = images.clone()
    marked[:6, :, :4, -4:] = 1.0
    (mark,) = repeated_marks(marked, references, window=0.25, tolerance=0.1, min_share=0.1, most=2)
    assert sorted(mark.carriers) == list(range(6))


def figures(pasted=0.0, pasted_control=0.0, kept=1.0, kept_control=1.0):
    return {"pixel_std_ratio": 0.0, "transplant_rate": pasted, "transplant_control_rate": pasted_control,
            "erased_rate": kept, "erased_control_rate": kept_control}


def test_a_marks_severity_follows_what_the_model_does_with_it():
    def judged(**kw):
        return mark_finding("pullover", [0.0, 0.0, 0.125, 0.125], "top-left corner", ["a", "b"], 40, 128, 0.0,
                            figures(**kw), CFG)  # fmt: skip

    high = judged(pasted=0.36)
    assert high.severity == "high" and high.kind == "repeated_mark"
    assert "40 of the 128 'pullover' images searched carry the same pixels at the top-left corner" in high.message
    assert high.metrics["carrier_share"] == pytest.approx(40 / 128) and "uses the mark" in high.message
    assert judged(pasted=0.15, pasted_control=0.02).severity == "medium"  # turns some others
    assert judged(kept=0.5).severity == "medium"  # its carriers need it
    unused = judged(pasted=0.05, kept=0.95)
    assert unused.severity == "low" and "does not use it" in unused.message


def test_a_mark_a_place_finding_already_tells_as_strongly_is_left_out_and_a_weaker_one_is_merged():
    mark = mark_finding("pullover", [0.0, 0.0, 0.125, 0.125], "top-left corner", ["a"], 40, 128, 0.0,
                        figures(pasted=0.2), CFG)  # fmt: skip  # medium
    place = Finding(kind="strategy_cluster", severity="medium", classes=["pullover"], region=[0.0, 0.06, 0.19, 0.25],
                    metrics={"share_gap": 0.11}, message="A cluster at the top-left corner.")  # fmt: skip
    assert _fold([place], mark) == [place]
    weaker = Finding(**{**place.__dict__, "severity": "low"})
    (merged,) = _fold([weaker], mark)
    assert merged.kind == "repeated_mark" and merged.severity == "medium"
    assert merged.metrics["strategy_cluster.share_gap"] == 0.11 and "A cluster" in merged.message
    elsewhere = Finding(**{**weaker.__dict__, "region": [0.5, 0.5, 1.0, 1.0]})
    assert _fold([elsewhere], mark) == [elsewhere, mark]


def test_with_marks_reads_the_images_and_tests_the_model_on_a_mark_no_finding_pointed_at(tmp_path):
    """End to end on files: an ImageFolder without masks, a model that uses a corner mark half the class carries,
    no finding before: the search adds one repeated_mark there, high (pasting it turns every other image)."""
    from auditor.config import DataConfig
    from auditor.data import AuditDataset, build_samples
    from auditor.mark_search import with_marks
    from auditor.sources import write_image_folder

    rng = np.random.default_rng(0)
    marked = objects(24, rng, centred=False, watermark=False)
    marked[::2, :, :4, -4:] = 1.0
    plain = objects(48, rng, centred=False, watermark=False)
    images = (torch.cat([plain, marked])[:, 0].numpy() * 255).astype(np.uint8)
    labels = [0] * len(plain) + [1] * len(marked)
    write_image_folder(tmp_path / "data", None, images, None, labels, ["plain", "marked"],
                       [f"{i:03d}" for i in range(len(images))])  # fmt: skip
    cfg = DataConfig(root=str(tmp_path / "data"), grayscale=True, mean=[0.0], std=[1.0])
    samples, classes = build_samples(cfg, ["plain", "marked"])
    (f,) = with_marks([], CornerDetector(), AuditDataset(samples, cfg), classes, "cpu", CFG)
    assert f.kind == "repeated_mark" and f.classes == ["marked"] and f.severity == "high"
    assert f.region == [0.75, 0.0, 1.0, 0.25] and f.metrics["carriers"] == 12
    assert f.metrics["transplant_rate"] == 1.0 and f.metrics["erased_rate"] == 0.0
    off = __import__("dataclasses").replace(CFG, mark_search=False)
    assert with_marks([], CornerDetector(), AuditDataset(samples, cfg), classes, "cpu", off) == []
    # A high place finding of the class already there: the mark could only be left out, so the model is not run.
    told = Finding(kind="spatial_shortcut", severity="high", classes=["marked"], message="top-right corner",
                   region=[0.7, 0.0, 1.0, 0.3])
    runs = []
    counted = CornerDetector()
    counted.register_forward_pre_hook(lambda _module, args: runs.append(len(args[0])))
    assert with_marks([told], counted, AuditDataset(samples, cfg), classes, "cpu", CFG) == [told]
    assert runs == []


def test_a_mark_needs_five_carriers_however_small_the_class():
    """Each image matches itself: in a class of four, one image alone would be a quarter of the class."""
    rng = np.random.default_rng(2)
    images, references = objects(4, rng, False, False), objects(64, rng, False, False)
    assert repeated_marks(images, references, window=0.25, tolerance=0.1, min_share=0.1, most=2) == []
    images = objects(8, rng, False, False)
    images[:5, :, :4, -4:] = 1.0
    (mark,) = repeated_marks(images, references, window=0.25, tolerance=0.1, min_share=0.1, most=2)
    assert sorted(mark.carriers) == [0, 1, 2, 3, 4]


def test_bad_mark_settings_are_refused_with_the_setting_named():
    from auditor.config import load_config

    for setting in ("findings.mark_window=0", "findings.mark_tolerance=0", "findings.mark_images=1"):
        with pytest.raises(Exception, match="findings.mark_"):
            load_config(None, [setting])


def test_a_mark_the_model_does_not_use_is_not_reported(tmp_path):
    """The same data as above, and a model that names class 1 whatever the image: pasting the mark turns nothing
    (no other image is left to turn) and erasing it loses nothing, so the mark says nothing about the model."""
    from auditor.config import DataConfig
    from auditor.data import AuditDataset, build_samples
    from auditor.mark_search import with_marks
    from auditor.sources import write_image_folder

    class AlwaysOne(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[0.0, 1.0]]).expand(len(x), 2)

    rng = np.random.default_rng(0)
    marked = objects(24, rng, centred=False, watermark=False)
    marked[::2, :, :4, -4:] = 1.0
    images = (torch.cat([objects(48, rng, False, False), marked])[:, 0].numpy() * 255).astype(np.uint8)
    write_image_folder(tmp_path / "data", None, images, None, [0] * 48 + [1] * 24, ["plain", "marked"],
                       [f"{i:03d}" for i in range(len(images))])  # fmt: skip
    cfg = DataConfig(root=str(tmp_path / "data"), grayscale=True, mean=[0.0], std=[1.0])
    samples, classes = build_samples(cfg, ["plain", "marked"])
    assert with_marks([], AlwaysOne(), AuditDataset(samples, cfg), classes, "cpu", CFG) == []


def test_mark_tests_stop_where_their_forwards_pass_the_run_share_and_the_first_always_runs():
    """A test costs its carriers twice (erased, control) and the references twice (pasted, control): with 64
    references, marks of 10, 6 and 20 carriers cost 148, 140 and 168 forwards."""
    marks = [Mark(0, 0, 4, list(range(n)), 0.0) for n in (10, 6, 20)]
    assert affordable_tests(marks, ["a", "b", "c"], 64, allowance=456) == ["a", "b", "c"]  # 148 + 140 + 168
    assert affordable_tests(marks, ["a", "b", "c"], 64, allowance=455) == ["a", "b"]
    assert affordable_tests(marks, ["a", "b", "c"], 64, allowance=287) == ["a"]  # 148 + 140 = 288
    assert affordable_tests(marks, ["a", "b", "c"], 64, allowance=10) == ["a"]  # the first always
    assert affordable_tests([], [], 64, allowance=1000) == []
