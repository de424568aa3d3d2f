"""The causal check on a hand-made model whose answers with the object or the region erased are known."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch

from auditor.causal import (
    apply_causal,
    bands_from_findings,
    border_mask,
    causal_check,
    erase,
    object_boxes,
    region_mask,
    regions_from_findings,
    write_causal,
)
from auditor.config import FindingsConfig
from auditor.findings import Finding

CLASSES = ["plain", "marked", "empty"]
CORNER = [0.75, 0.0, 1.0, 0.25]  # the top-right pixel of a 4 x 4 image
CFG = FindingsConfig()


class CornerModel(torch.nn.Module):
    """logits: plain = sum of the centre 2 x 2, marked = 10 x the top-right pixel, empty = 0.5.

    So a marked image is recognised by its corner alone, a plain one by its object, and a blank one is empty.
    """

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen = []  # (training, grad enabled) at each call

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled()))
        centre = x[:, 0, 1:3, 1:3].sum(dim=(1, 2))
        corner = x[:, 0, 0, 3]
        return self.scale * torch.stack([centre, 10 * corner, torch.full_like(centre, 0.5)], dim=1)


def image(marked: bool) -> torch.Tensor:
    img = torch.zeros(1, 4, 4)
    img[0, 1:3, 1:3] = 1.0
    if marked:
        img[0, 0, 3] = 1.0
    return img


def batch(labels, has_mask):
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3, 1:3] = True
    return {
        "image": torch.stack([image(label == 1) for label in labels]),
        "mask": torch.stack([mask if m else torch.zeros_like(mask) for m in has_mask]),
        "has_mask": torch.tensor(has_mask),
        "label": torch.tensor(labels),
        "index": torch.arange(len(labels)),
    }


def test_erase_fills_only_masked_pixels():
    images = torch.arange(8.0).view(1, 2, 2, 2)
    masks = torch.tensor([[[True, False], [False, True]]])
    out = erase(images, masks, fill=-1.0)
    assert out.tolist() == [[[[-1.0, 1.0], [2.0, -1.0]], [[-1.0, 5.0], [6.0, -1.0]]]]
    assert images[0, 0, 0, 0] == 0.0  # the input is left alone
    shared = erase(torch.ones(2, 1, 2, 2), torch.tensor([[True, False], [False, False]]))
    assert shared[:, 0, 0, 0].tolist() == [0.0, 0.0] and shared.sum() == 6.0  # one mask for the whole batch


def test_object_boxes_fill_the_square_around_each_mask_inside_the_image():
    masks = torch.zeros(4, 6, 7, dtype=torch.bool)
    masks[0, 2, 2] = masks[0, 3, 4] = True  # rows 2-3, columns 2-4: widened to rows 2-4 (down: floor of 1/2 up)
    masks[1, 5, 6] = True  # one pixel in the corner: a 1 x 1 square
    masks[2, 0, 1:6] = True  # a flat strip at the top edge: rows 0-4, shifted down to stay inside
    boxes = object_boxes(masks)
    assert boxes[0].nonzero().tolist() == [[r, c] for r in (2, 3, 4) for c in (2, 3, 4)]
    assert boxes[1].nonzero().tolist() == [[5, 6]]
    assert boxes[2].nonzero().tolist() == [[r, c] for r in range(5) for c in range(1, 6)]
    assert not boxes[3].any()  # no object, nothing erased


def test_region_mask_covers_every_touched_pixel():
    assert region_mask(CORNER, 4, 4).nonzero().tolist() == [[0, 3]]
    wide = region_mask([0.3, 0.0, 0.6, 0.5], 4, 8)  # x 0.3..0.6 of 8 columns touches columns 2..4
    assert wide.nonzero()[:, 1].unique().tolist() == [2, 3, 4]
    assert wide.nonzero()[:, 0].unique().tolist() == [0, 1]
    assert region_mask([0.0, 0.0, 1.0, 1.0], 3, 5).all()


def test_border_mask_is_the_band_and_its_control_the_same_band_just_inside():
    band = border_mask(0.25, 8, 8)  # a quarter of 8 pixels: 2 wide
    expected = torch.ones(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = False
    assert band.tolist() == expected.tolist()
    inside = border_mask(0.25, 8, 8, inset=1)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = True  # a 2-wide band of the 4 x 4 inside leaves no hole
    assert inside.tolist() == expected.tolist() and not (band & inside).any()
    assert border_mask(0.1, 4, 6).sum() == 4 * 6 - 2 * 4  # ceil(0.4) = 1 pixel wide on a 4 x 6 image


def test_causal_check_measures_object_and_region_removal():
    model = CornerModel().train()
    batches = [
        batch([0, 1, 1], has_mask=[True, True, True]),
        batch([0, 1], has_mask=[True, False]),
    ]
    df = causal_check(model, batches, CLASSES, regions={1: CORNER}, device="cpu").set_index("class")
    assert list(df.index) == ["plain", "marked"]  # no "empty" images, no row
    plain, marked = df.loc["plain"], df.loc["marked"]
    assert (plain.n, marked.n) == (2, 3)
    assert plain.accuracy == 1.0 and marked.accuracy == 1.0
    assert plain.background_only_accuracy == 0.0  # no object, no plain
    assert (marked.n_masked, marked.background_only_accuracy) == (2, 1.0)  # still marked: the corner suffices
    assert marked.background_only_baseline == 0.0  # erased plain images are called empty, never marked
    assert marked.shortcut_removed_accuracy == 0.0 and marked.n_region == 3  # without its corner it is plain
    assert math.isnan(plain.shortcut_removed_accuracy) and plain.region == ""
    assert json.loads(marked.region) == CORNER
    assert model.training  # mode restored
    assert model.seen and all(not training and not grad for training, grad in model.seen)


class FrameModel(torch.nn.Module):
    """logits: plain = 0.5, framed = 10 x the mean of the outermost ring of pixels, empty = 0: a model that
    needs the whole frame (any three sides of it still pass 0.5)."""

    def forward(self, x):
        ring = torch.ones(x.shape[-2:], dtype=torch.bool)
        ring[1:-1, 1:-1] = False
        frame = x[:, 0, ring].mean(dim=1)
        return torch.stack([torch.full_like(frame, 0.5), 10 * frame, torch.zeros_like(frame)], dim=1)


def test_a_frames_causal_check_erases_its_whole_band_against_the_band_inside_it():
    """Framed 8 x 8 images of class 1: erasing the bottom side (the finding's region) leaves three sides and the
    class (7.5 > 0.5); erasing the whole band (an eighth: 1 pixel) loses it; the band just inside it is the
    control, and erasing it leaves the frame."""
    images = torch.zeros(4, 1, 8, 8)
    images[:, :, [0, -1], :] = 1.0
    images[:, :, :, [0, -1]] = 1.0
    frames = {"image": images, "mask": torch.zeros(4, 8, 8, dtype=torch.bool), "has_mask": torch.zeros(4, dtype=torch.bool),
              "label": torch.ones(4, dtype=torch.long), "index": torch.arange(4)}
    bottom = [0.0, 0.875, 1.0, 1.0]
    side = causal_check(FrameModel(), [frames], CLASSES, {1: bottom}, "cpu").set_index("class").loc["marked"]
    assert side.shortcut_removed_accuracy == 1.0 and math.isnan(side.border_band)
    band = causal_check(FrameModel(), [frames], CLASSES, {1: bottom}, "cpu", bands={1: 0.125}).set_index("class")
    band = band.loc["marked"]
    assert (band.shortcut_removed_accuracy, band.region_control_accuracy, band.border_band) == (0.0, 1.0, 0.125)
    assert json.loads(band.region) == bottom
    frame = Finding(kind="spatial_shortcut", severity="medium", classes=["marked"], region=bottom,
                    metrics={"border_band": 0.125}, message="a frame")
    other = dataclasses.replace(frame, classes=["plain"], metrics={}, region=CORNER)
    assert bands_from_findings([frame, other], CLASSES) == {1: 0.125}
    assert bands_from_findings([dataclasses.asdict(frame)], CLASSES) == {1: 0.125}  # findings.json's dicts too
    # The verdict speaks of the band: a frame whose erasure changes nothing is refuted in those words.
    row = {"class": "marked", "accuracy": 1.0, "shortcut_removed_accuracy": 1.0, "region_control_accuracy": 1.0,
           "region": json.dumps(bottom), "border_band": 0.125}
    (judged,) = apply_causal([frame], pd.DataFrame([row]), CFG)
    assert judged.severity == "low" and "erasing the border band leaves its accuracy at 100%" in judged.message


def test_causal_check_restores_eval_mode_and_survives_errors():
    model = CornerModel().eval()
    causal_check(model, [batch([0], [True])], CLASSES, {}, "cpu")
    assert not model.training
    model.train()
    broken = [{"image": torch.zeros(1, 1, 4, 4)}]  # no label: a KeyError mid-loop
    with pytest.raises(KeyError):
        causal_check(model, broken, CLASSES, {}, "cpu")
    assert model.training


def shortcut(severity="medium", region=CORNER, kind="spatial_shortcut", classes=("marked",)):
    return Finding(
        id="F001", kind=kind, severity=severity, classes=list(classes), region=region, samples=["a"],
        metrics={"hit_rate": 1.0, "place_on_object": 0.0}, message="Class 'marked' keeps looking at the top-right corner.",
    )  # fmt: skip


def causal_row(**values):
    row = {
        "class": "marked", "n": 30, "accuracy": 1.0, "n_masked": 30, "background_only_accuracy": 0.1,
        "background_only_baseline": 0.05, "n_region": 30, "shortcut_removed_accuracy": 0.9,
        "region": json.dumps(CORNER),
    }  # fmt: skip
    return pd.DataFrame([{**row, **values}])


def test_apply_causal_raises_a_class_still_recognised_without_its_object():
    (f,) = apply_causal([shortcut()], causal_row(background_only_accuracy=0.9), CFG)
    assert f.severity == "high" and f.id == "F001"
    assert f.metrics["background_only_accuracy"] == 0.9 and f.metrics["hit_rate"] == 1.0
    assert "confirmed" in f.message and f.message.endswith(".")


def test_apply_causal_raises_when_erasing_the_region_breaks_the_class():
    (f,) = apply_causal([shortcut()], causal_row(shortcut_removed_accuracy=0.2), CFG)
    assert f.severity == "high" and f.metrics["shortcut_removed_accuracy"] == 0.2


def test_erasing_the_region_confirms_only_beyond_erasing_a_random_region_that_size():
    # Erasing the region: 100 % -> 20 %. A random region that size: 60 % -> a drop of 0.4 beyond it, below 0.5.
    (f,) = apply_causal([shortcut()], causal_row(shortcut_removed_accuracy=0.2, region_control_accuracy=0.6), CFG)
    assert f.severity == shortcut().severity and f.metrics["region_control_accuracy"] == 0.6
    (f,) = apply_causal([shortcut()], causal_row(shortcut_removed_accuracy=0.2, region_control_accuracy=0.95), CFG)
    assert f.severity == "high" and "a random region that size: 95%" in f.message


def test_random_boxes_keep_the_region_s_size_inside_the_image():
    from auditor.causal import random_boxes

    region = region_mask([0.0, 0.0, 0.5, 0.25], 8, 8)  # 2 rows x 4 columns
    boxes = random_boxes(region.expand(50, 8, 8), torch.Generator().manual_seed(0))
    assert boxes.shape == (50, 8, 8) and (boxes.sum(dim=(1, 2)) == 8).all()
    assert all(b.any(dim=1).sum() == 2 and b.any(dim=0).sum() == 4 for b in boxes)
    assert len({tuple(b.nonzero()[0].tolist()) for b in boxes}) > 5  # placed at random


def test_apply_causal_keeps_severity_when_the_check_is_inconclusive():
    before = shortcut()
    (f,) = apply_causal([before], causal_row(background_only_accuracy=0.25, shortcut_removed_accuracy=0.7), CFG)
    assert f.severity == "medium" and f.message == before.message
    assert f.metrics["background_only_accuracy"] == 0.25 and f.metrics["shortcut_removed_accuracy"] == 0.7
    # a model that calls every blank image "marked" is not evidence about "marked"
    blank_is_marked = causal_row(
        background_only_accuracy=0.9, background_only_baseline=0.85, shortcut_removed_accuracy=0.7
    )
    (f,) = apply_causal([before], blank_is_marked, CFG)
    assert f.severity == "medium" and f.metrics["background_only_baseline"] == 0.85
    assert before.metrics == {"hit_rate": 1.0, "place_on_object": 0.0}  # the input finding is not changed


def test_apply_causal_lowers_a_class_finding_every_test_refutes():
    (f,) = apply_causal([shortcut(severity="high")], causal_row(), CFG)  # object needed, region not
    assert f.severity == "low" and "not confirmed" in f.message
    half_refuted = causal_row(shortcut_removed_accuracy=0.7)  # the region matters somewhat
    assert apply_causal([shortcut(severity="high")], half_refuted, CFG)[0].severity == "high"
    cluster = shortcut(severity="medium", kind="strategy_cluster")  # part of a class: class figures dilute it
    assert apply_causal([cluster], causal_row(), CFG)[0].severity == "medium"
    pasted = shortcut(severity="high")  # pasting the place turned 81 % of other images: the model uses it
    pasted = dataclasses.replace(pasted, metrics={**pasted.metrics, "transplant_rate": 0.81,
                                                  "transplant_control_rate": 0.0})
    assert apply_causal([pasted], causal_row(), CFG)[0].severity == "high"


def test_apply_causal_only_uses_what_applies():
    other_region = shortcut(region=[0.0, 0.0, 0.25, 0.25])
    no_masks = causal_row(background_only_accuracy=float("nan"), shortcut_removed_accuracy=0.0)
    (f,) = apply_causal([other_region], no_masks, CFG)
    assert "background_only_accuracy" not in f.metrics  # NaN: no masked images
    assert "shortcut_removed_accuracy" not in f.metrics  # measured on another region
    assert f.severity == "medium"  # nothing was tested
    pair = Finding(kind="context_confusion", severity="low", classes=["marked", "plain"],
                   pair={"true": "marked", "pred": "plain"}, message="Alike.")  # fmt: skip
    (g,) = apply_causal([pair], causal_row(), CFG)
    assert g == dataclasses.replace(pair, id="F001")


def test_apply_causal_reports_a_class_recognised_without_its_object_that_no_heatmap_rule_flagged():
    pair = Finding(kind="context_confusion", severity="medium", classes=["marked", "plain"],
                   pair={"true": "marked", "pred": "plain"}, message="Context.")  # fmt: skip
    causal = pd.concat([
        causal_row(background_only_accuracy=0.8),
        causal_row(**{"class": "plain", "background_only_accuracy": 0.2}),  # not enough above the baseline
    ])  # fmt: skip
    new, old = apply_causal([pair], causal, CFG)
    assert (new.id, new.kind, new.severity, new.classes) == ("F001", "recognised_without_object", "high", ["marked"])
    assert new.metrics["background_only_accuracy"] == 0.8 and new.metrics["background_only_baseline"] == 0.05
    assert old.kind == "context_confusion" and old.metrics == {}


def test_apply_causal_renumbers_after_raising():
    low = shortcut(severity="low", classes=("marked",))
    medium = shortcut(severity="medium", kind="background_reliance", region=None, classes=("plain",))
    findings = apply_causal([medium, low], causal_row(background_only_accuracy=0.95), CFG)
    assert [(f.id, f.classes, f.severity) for f in findings] == [
        ("F001", ["marked"], "high"), ("F002", ["plain"], "medium"),
    ]  # fmt: skip


def test_regions_from_findings_takes_the_most_severe_region_per_class():
    findings = [
        shortcut(region=[0.5, 0.5, 0.75, 0.75]).to_dict(),
        shortcut(region=CORNER),
        shortcut(kind="background_reliance", region=None, classes=("plain",)),
    ]
    assert regions_from_findings(findings, CLASSES) == {1: [0.5, 0.5, 0.75, 0.75]}


def test_write_causal_round_trips_through_csv(tmp_path):
    model = CornerModel()
    df = causal_check(model, [batch([0, 1], [True, True])], CLASSES, {1: CORNER}, "cpu")
    write_causal(tmp_path, df)
    back = pd.read_csv(tmp_path / "causal.csv")
    (f,) = apply_causal([shortcut()], back, CFG)
    assert f.severity == "high"  # background-only 1.0 and the region's removal breaks the class
    assert f.metrics["shortcut_removed_accuracy"] == 0.0


def test_the_causal_check_reads_the_flagged_classes_or_every_class_when_the_maps_miss_the_objects():
    from auditor.judge import causal_classes

    shortcut = Finding(kind="spatial_shortcut", severity="high", classes=["plain"], message="Corner.")
    pair = Finding(kind="context_confusion", severity="medium", classes=["marked", "plain"],
                   pair={"true": "marked", "pred": "plain"}, message="Context.")  # fmt: skip
    names = ["marked", "plain", "other"]
    assert causal_classes([shortcut, pair], names, every_class=False) == [1]  # pair findings name no class
    assert causal_classes([shortcut, pair], names, every_class=True) == [0, 1, 2]
    assert len(causal_classes([shortcut, pair], names, every_class=True, most=2)) == 2  # the run's budget


class NeedsBothModel(torch.nn.Module):
    """logits: plain = sum of the centre 2 x 2; striped = 10 x the top-right pixel x (centre sum - 5); empty = 0.5.

    A striped image (centre 2, corner 1) is recognised only with its own object and its corner together: erase
    the object and it is empty, take the corner away and it is plain; a plain object (centre 1) on a striped
    background stays plain.
    """

    def forward(self, x):
        centre = x[:, 0, 1:3, 1:3].sum(dim=(1, 2))
        corner = x[:, 0, 0, 3]
        return torch.stack([centre, 10 * corner * (centre - 5), torch.full_like(centre, 0.5)], dim=1)


def needs_both_batch(labels):
    """Images of NeedsBothModel's classes (0 plain, 1 striped), every one with its centre 2 x 2 masked."""
    images = torch.zeros(len(labels), 1, 4, 4)
    for img, label in zip(images, labels):
        img[0, 1:3, 1:3] = 2.0 if label == 1 else 1.0
        img[0, 0, 3] = 1.0 if label == 1 else 0.0
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3, 1:3] = True
    return {"image": images, "mask": mask.expand(len(labels), 4, 4).clone(), "has_mask": torch.ones(len(labels)).bool(),
            "label": torch.tensor(labels), "index": torch.arange(len(labels))}  # fmt: skip


def test_mixed_backgrounds_catch_a_class_that_needs_object_and_background_together():
    batches = [needs_both_batch([0, 0, 0, 1, 1]), needs_both_batch([1, 0, 1])]
    df = causal_check(NeedsBothModel(), batches, CLASSES, {}, "cpu").set_index("class")
    plain, striped = df.loc["plain"], df.loc["marked"]  # "marked" is the striped class here
    assert striped.background_only_accuracy == 0.0  # erasing the object alone shows nothing
    assert (striped.n_mixed, striped.mixed_same_accuracy, striped.mixed_rand_accuracy) == (4, 1.0, 0.0)
    assert (plain.n_mixed, plain.mixed_same_accuracy, plain.mixed_rand_accuracy) == (4, 1.0, 1.0)
    capped = causal_check(NeedsBothModel(), batches, CLASSES, {}, "cpu", mixed_per_class=2).set_index("class")
    assert capped["n_mixed"].tolist() == [2, 2]
    off = causal_check(NeedsBothModel(), batches, CLASSES, {}, "cpu", mixed_per_class=0)
    assert off["n_mixed"].tolist() == [0, 0] and off["mixed_same_accuracy"].isna().all()
    alone = causal_check(NeedsBothModel(), [needs_both_batch([1, 1])], CLASSES, {}, "cpu")
    assert alone["mixed_rand_accuracy"].isna().all()  # no other class's background to paste onto


def test_mixed_backgrounds_never_paste_an_object_onto_its_own_image():
    from auditor.causal import mixed_backgrounds

    class Remembers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, x):
            self.seen.append(x.clone())
            return torch.zeros(len(x), 3)

    images = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2).clone()
    masks = torch.zeros(3, 2, 2, dtype=torch.bool)
    masks[:, 0, 0] = True  # the object: the top-left pixel; erasing it leaves the other three pixels
    other = (torch.full((1, 1, 2, 2), 9.0), torch.zeros(1, 2, 2, dtype=torch.bool))
    model = Remembers()
    mixed_backgrounds(model, {0: (images, masks), 1: other}, "cpu", torch.Generator().manual_seed(0))
    same = model.seen[0]
    assert same[:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0]  # each object where it was
    assert all(same[i, 0, 1, 1] not in (0.0, images[i, 0, 1, 1]) for i in range(3))  # on another one's background
    assert (model.seen[1][:, 0, 1, 1] == 9.0).all()  # Mixed-Rand: the other class's background


def mixed_row(name, same, rand):
    return causal_row(**{"class": name, "background_only_accuracy": 0.0, "background_only_baseline": 0.0,
                         "shortcut_removed_accuracy": float("nan"), "region": "",
                         "mixed_same_accuracy": same, "mixed_rand_accuracy": rand})  # fmt: skip


def test_apply_causal_raises_a_class_that_loses_itself_on_other_classes_backgrounds():
    background = shortcut(severity="low", kind="background_reliance", region=None)
    causal = pd.concat([mixed_row("marked", 1.0, 0.2), mixed_row("plain", 0.9, 0.8)])
    (f,) = apply_causal([background], causal, CFG)
    assert f.severity == "high" and "its own class's 100%" in f.message
    assert (f.metrics["mixed_rand_accuracy"], f.metrics["mixed_gap_baseline"]) == (0.2, pytest.approx(0.1))
    # the same class without the mixed test: erasing its object refutes it, as before this test existed
    unmixed = causal.drop(columns=["mixed_same_accuracy", "mixed_rand_accuracy"])
    assert apply_causal([background], unmixed, CFG)[0].severity == "low"


def test_a_background_gap_every_unflagged_class_shares_is_not_evidence():
    background = shortcut(severity="medium", kind="background_reliance", region=None)
    # another class's background cue claims any object pasted onto it: every class loses about half
    causal = pd.concat([mixed_row("marked", 1.0, 0.45), mixed_row("plain", 0.9, 0.4), mixed_row("empty", 1.0, 0.5)])
    (f,) = apply_causal([background], causal, CFG)
    assert f.metrics["mixed_gap_baseline"] == pytest.approx(0.5)
    assert f.severity == "low" and "not confirmed" in f.message  # no more than any class: both tests refute it
    # the median comes from the unflagged classes only: a second suspect with a large gap does not raise it
    suspects = [background, shortcut(severity="low", kind="background_reliance", region=None, classes=("plain",))]
    causal = pd.concat([mixed_row("marked", 1.0, 0.3), mixed_row("plain", 1.0, 0.0), mixed_row("empty", 1.0, 0.95)])
    marked = next(f for f in apply_causal(suspects, causal, CFG) if f.classes == ["marked"])
    assert marked.severity == "high" and marked.metrics["mixed_gap_baseline"] == pytest.approx(0.05)


def test_the_causal_check_measures_unflagged_control_classes_beside_the_flagged():
    from auditor.judge import control_classes

    controls = control_classes({3}, 10, seed=0)
    assert len(controls) == 2 and not controls & {3} and controls == control_classes({3}, 10, seed=0)
    assert len(control_classes({1, 2, 3}, 10, seed=0)) == 3  # as many as flagged
    assert control_classes({0, 1, 2}, 4, seed=0) == {3}  # no more than there are
    assert control_classes(set(), 10, seed=0) == set() == control_classes({0, 1}, 2, seed=0)


def test_the_background_baseline_counts_only_erased_images_their_own_class_no_longer_names():
    # erased: the plain image is called empty; the marked one is still marked (its corner); the empty one empty
    df = causal_check(CornerModel(), [batch([0, 1, 2], [True, True, True])], CLASSES, {}, "cpu").set_index("class")
    # of the other classes' erased images only the plain one lost its class, and it went to empty: a model that
    # sends every emptied image to "empty" recognises nothing by it (counting the marked image would make it 0.5)
    assert df.loc["empty", "background_only_baseline"] == 1.0
    assert df.loc["empty", "background_only_accuracy"] == 1.0
    assert df.loc["marked", "background_only_baseline"] == 0.0


def test_background_fill_tiles_the_square_with_the_image_s_own_pixels_from_beside_it():
    from auditor.causal import background_fill

    image = torch.arange(16.0).view(1, 1, 4, 4)  # rows 0..3 hold 0-3, 4-7, 8-11, 12-15
    square = torch.zeros(1, 4, 4, dtype=torch.bool)
    square[0, :2, :2] = True
    # Shifted down by the square's side (2), the square shows rows 2-3 of its columns: 8, 9, 12, 13; nothing else moves.
    out = background_fill(image, square)
    assert out[0, 0, :2, :2].tolist() == [[8.0, 9.0], [12.0, 13.0]]
    assert torch.equal(out[0, 0][~square[0]], image[0, 0][~square[0]])
    # A 3 x 3 square in 4 x 4: every shift by 3 brings 6 of its pixels back into it; the first (down) is taken,
    # row 2 shows row 3 (12, 13, 14) and the pixels that would come from the square itself get the mean (0).
    big = torch.zeros(1, 4, 4, dtype=torch.bool)
    big[0, :3, :3] = True
    assert background_fill(image, big)[0, 0, :3, :3].tolist() == [[0.0] * 3, [0.0] * 3, [12.0, 13.0, 14.0]]
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert torch.equal(background_fill(image, empty), image)  # no object: nothing to fill


def test_the_causal_check_reads_a_class_only_where_it_could_change_one_of_its_findings():
    """Without masks, a low place finding whose pixels show the place to be the object can be neither raised (the
    region erased is not known to be off the object) nor lowered: its class is not read again."""
    from auditor.findings.causal_evidence import causal_can_change

    on_object = Finding(kind="spatial_shortcut", severity="low", classes=["marked"], region=CORNER, message="m",
                        metrics={"pixel_std_ratio": 0.6})
    same_pixels = dataclasses.replace(on_object, metrics={"pixel_std_ratio": 0.02})  # a watermark's constancy
    assert not causal_can_change(on_object, CFG, masks=False)
    assert causal_can_change(on_object, CFG, masks=True)  # the background tests may raise it
    assert causal_can_change(same_pixels, CFG, masks=False)  # erasing it may confirm it
    assert causal_can_change(dataclasses.replace(on_object, severity="medium"), CFG, masks=False)  # may be lowered
