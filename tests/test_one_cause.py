"""auditor.one_cause: a class's place findings whose pixels look alike at their places grouped into one, by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from auditor.config import FindingsConfig
from auditor.findings import Finding
from auditor.one_cause import absorb_property, appearance, difference, one_cause, turns, where_it_departs

CFG = FindingsConfig()
SIZE = 32
CORNERS = {  # normalised region of each corner's finding, and the sticker's top-left pixel there
    "top-left": ([0.0, 0.0, 0.25, 0.25], (1, 1)),
    "top-right": ([0.75, 0.0, 1.0, 0.25], (1, 26)),
    "bottom-left": ([0.0, 0.75, 0.25, 1.0], (26, 1)),
    "bottom-right": ([0.75, 0.75, 1.0, 1.0], (26, 26)),
}


def run_with(stickers: dict[str, np.ndarray], per_place: int = 10, others: int = 80, seed: int = 0):
    """Thumbs of class 0 carrying, per corner, its pattern (5 x 5, RGB) on `per_place` images, and class 1 plain
    noise; one strategy_cluster finding per corner naming its images."""
    rng = np.random.default_rng(seed)
    n = per_place * len(stickers) + others
    thumbs = rng.integers(40, 120, size=(n, 3, SIZE, SIZE)).astype(np.uint8)
    labels = np.r_[np.zeros(per_place * len(stickers), int), np.ones(others, int)]
    findings = []
    for k, (corner, pattern) in enumerate(stickers.items()):
        region, (y, x) = CORNERS[corner]
        rows = range(k * per_place, (k + 1) * per_place)
        for r in rows:
            thumbs[r, :, y:y + 5, x:x + 5] = pattern
        severity = "high" if k == 0 else "medium"
        findings.append(Finding(kind="strategy_cluster", severity=severity, classes=["cat"], region=region,
                                samples=[f"i{r}" for r in rows], metrics={"cluster_share": 0.25}, message=corner))
    records = pd.DataFrame({"id": [f"i{r}" for r in range(n)], "row": np.arange(n), "label_idx": labels})
    return findings, records, thumbs


def red(value: int = 255) -> np.ndarray:
    pattern = np.zeros((3, 5, 5), np.uint8)
    pattern[0] = value
    return pattern


def test_the_eight_turns_and_flips_of_an_asymmetric_patch_are_distinct():
    patch = torch.arange(9.0).view(1, 3, 3)
    assert len({tuple(t.flatten().tolist()) for t in turns(patch)}) == 8


def test_a_sticker_that_moves_between_four_corners_is_one_finding_naming_every_place():
    findings, records, thumbs = run_with({corner: red() for corner in CORNERS})
    (f,) = one_cause(findings, records, thumbs, ["cat", "dog"], CFG)
    assert f.severity == "high" and f.metrics["places"] == 4 and f.region == CORNERS["top-left"][0]
    assert len(f.samples) == 40 and f.samples[:10] == findings[0].samples  # every place's images, the first's first
    assert all(corner in f.message for corner in ("top-left", "top-right", "bottom-left", "bottom-right"))


def test_different_marks_and_plain_background_stay_apart():
    a_cross = np.zeros((3, 5, 5), np.uint8)
    a_cross[2, 2, :], a_cross[2, :, 2] = 255, 255  # a blue cross, not a red square
    findings, records, thumbs = run_with({"top-left": red(), "bottom-right": a_cross})
    assert len(one_cause(findings, records, thumbs, ["cat", "dog"], CFG)) == 2
    # Clusters whose images show nothing but the noise every class has: no cue, however alike.
    findings, records, thumbs = run_with({"top-left": red(), "bottom-right": red()})
    records = records.assign(label_idx=0)  # every image one class: no other class to differ from ...
    records.loc[records.index[-40:], "label_idx"] = 1  # ... but 40 noise images of another class
    plain = [Finding(kind="strategy_cluster", severity="medium", classes=["cat"], region=CORNERS[c][0],
                     samples=[f"i{r}" for r in range(20 + 10 * k, 30 + 10 * k)], message=c)
             for k, c in enumerate(("top-right", "bottom-left"))]  # images 20-39: noise only at those corners
    assert len(one_cause(plain, records, thumbs, ["cat", "dog"], CFG)) == 2


def test_low_findings_stay_apart_and_look_alikes_at_one_place_are_one_card():
    findings, records, thumbs = run_with({corner: red() for corner in CORNERS})
    low = [dataclasses.replace(f, severity="low") for f in findings]  # not yet a cue: an object's parts look alike
    assert len(one_cause(low, records, thumbs, ["cat", "dog"], CFG)) == 4
    # A shortcut the class's maps peak at and a minority cluster (a quarter of the class) attending the same red
    # square there: one card, not a move; the cluster names which images carry it, the shortcut's evidence kept.
    twin = dataclasses.replace(findings[0], kind="spatial_shortcut", severity="medium", metrics={"hit_rate": 0.13},
                               message="peaks")
    (f,) = one_cause([twin, findings[0]], records, thumbs, ["cat", "dog"], CFG)
    assert (f.kind, f.severity, f.region) == ("strategy_cluster", "high", CORNERS["top-left"][0])
    assert f.metrics["spatial_shortcut.hit_rate"] == 0.13 and "places" not in f.metrics
    assert f.message == "top-left Also spatial shortcut: peaks"
    # At one place but different pixels (a red square's cluster, a blue cross's shortcut there): two cards.
    cross = np.zeros((3, 5, 5), np.uint8)
    cross[2, 2, :], cross[2, :, 2] = 255, 255
    other, records, thumbs = run_with({"top-left": red(), "bottom-right": cross})
    at_the_cross = dataclasses.replace(other[1], kind="spatial_shortcut", region=CORNERS["top-left"][0])
    thumbs[10:20, :, 1:6, 1:6] = cross  # the cross's images carry it at the top-left too
    assert len(one_cause([other[0], at_the_cross], records, thumbs, ["cat", "dog"], CFG)) == 2


def test_without_thumbs_or_when_off_nothing_is_grouped():
    findings, records, thumbs = run_with({corner: red() for corner in CORNERS})
    assert one_cause(findings, records, None, ["cat", "dog"], CFG) == findings
    off = FindingsConfig(group_max_difference=0.0)
    assert one_cause(findings, records, thumbs, ["cat", "dog"], off) == findings


def test_appearance_contrast_is_in_units_of_the_references_pixel_std():
    members = torch.zeros(4, 1, 8, 8)
    members[:, :, :2, :2] = 10.0
    references = torch.zeros(6, 1, 8, 8)
    references[::2] = 2.0  # pixel std over all references: 1.095...
    look = appearance(members, references, [0.0, 0.0, 0.25, 0.25], 0.25)  # the 2 x 2 window at the top-left
    scale = float(references.std())
    assert abs(look.scale - scale) < 1e-6 and abs(look.contrast - 9.0 / scale) < 1e-5  # members 10, refs' mean 1


def test_a_group_checked_against_masks_takes_in_its_class_s_background_reliance():
    findings, records, thumbs = run_with({corner: red() for corner in CORNERS})
    findings = [dataclasses.replace(f, metrics={**f.metrics, "place_on_object": 0.05}) for f in findings]
    background = Finding(kind="background_reliance", severity="high", classes=["cat"], metrics={"object_score": 0.1},
                         message="cat looks off its objects.")
    other = Finding(kind="background_reliance", severity="medium", classes=["dog"], message="dog too.")
    out = one_cause([*findings, background, other], records, thumbs, ["cat", "dog"], CFG)
    assert [f.kind for f in out] == ["strategy_cluster", "background_reliance"] and out[1] is other
    assert out[0].metrics["background_reliance.object_score"] == 0.1 and "cat looks off its objects" in out[0].message
    # Without masks (no place_on_object), a background finding is another matter: kept.
    findings, records, thumbs = run_with({corner: red() for corner in CORNERS})
    assert len(one_cause([*findings, background], records, thumbs, ["cat", "dog"], CFG)) == 2


def test_where_a_property_departs_by_hand():
    # One channel, 2 x 2 images; the object is the left column, the background the right one.
    masks = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).expand(2, 2, 2)
    ours = torch.tensor([[[0.2, 0.8], [0.2, 0.8]], [[0.2, 0.6], [0.2, 0.6]]])[:, None]
    theirs = torch.tensor([[[0.2, 0.2], [0.2, 0.2]], [[0.4, 0.0], [0.4, 0.0]]])[:, None]
    on_background, on_objects = where_it_departs("brightness", ours, masks, theirs, masks)
    # backgrounds 0.8, 0.6 against 0.2, 0.0: (0.7 - 0.1) / std(0.8, 0.6, 0.2, 0.0) = 0.6 / sqrt(0.4 / 3)
    assert on_background == pytest.approx(0.6 / (0.4 / 3) ** 0.5, rel=1e-5)
    # objects 0.2, 0.2 against 0.2, 0.4: (0.2 - 0.3) / std(0.2, 0.2, 0.2, 0.4) = -0.1 / 0.1
    assert on_objects == pytest.approx(-1.0, rel=1e-5)
    assert np.isnan(where_it_departs("cast_rg", ours, masks, theirs, masks)[0])  # no cast in one channel


def property_run(on_background: bool, n: int = 20, seed: int = 0):
    """Cats brighter than dogs, on their backgrounds or on their objects (a centred square); the class's
    background_reliance and property_shortcut (brightness) findings."""
    rng = np.random.default_rng(seed)
    thumbs = rng.integers(40, 80, size=(2 * n, 1, 16, 16)).astype(np.uint8)
    masks = np.zeros((2 * n, 8, 8), dtype=np.float16)  # map cells: half the thumbs' side
    masks[:, 2:6, 2:6] = 1.0
    brighter = np.zeros((16, 16), dtype=bool)
    brighter[4:12, 4:12] = True
    thumbs[:n, 0][:, ~brighter if on_background else brighter] += 120
    records = pd.DataFrame({"row": np.arange(2 * n), "id": [f"i{r}" for r in range(2 * n)],
                            "label_idx": np.r_[np.zeros(n, int), np.ones(n, int)], "has_mask": True})
    findings = [
        Finding(kind="background_reliance", severity="high", classes=["cat"], metrics={"object_score": 0.1},
                message="Cats are recognised off their objects."),
        Finding(kind="property_shortcut", severity="high", classes=["cat"], metrics={"property": 0, "effect": 2.0},
                message="Cats are brighter."),
        Finding(kind="property_shortcut", severity="low", classes=["dog"], metrics={"property": 0, "effect": -2.0},
                message="Dogs are darker."),
    ]
    return findings, records, thumbs, masks


def test_a_property_of_the_backgrounds_is_folded_into_the_class_s_background_reliance():
    findings, records, thumbs, masks = property_run(on_background=True)
    out = absorb_property(findings, records, thumbs, masks, ["cat", "dog"], CFG)
    assert [(f.kind, f.classes) for f in out] == [("background_reliance", ["cat"]), ("property_shortcut", ["dog"])]
    merged = out[0]
    assert merged.metrics["property_shortcut.background_effect"] > 1.0
    assert "Cats are brighter." in merged.message and merged.metrics["object_score"] == 0.1
    objects = property_run(on_background=False)
    assert absorb_property(*objects, ["cat", "dog"], CFG) == objects[0]  # brighter objects: another cause
    assert absorb_property(findings, records, thumbs, None, ["cat", "dog"], CFG) == findings  # no masks


@pytest.mark.parametrize("maps_said", ["nothing", "low"])
def test_a_used_property_of_the_backgrounds_is_the_class_s_background_reliance_where_the_maps_raised_none(maps_said):
    findings, records, thumbs, masks = property_run(on_background=True)
    if maps_said == "nothing":
        findings = findings[1:]
    else:
        findings[0] = dataclasses.replace(findings[0], severity="low", message="Not confirmed.")
    out = absorb_property(findings, records, thumbs, masks, ["cat", "dog"], CFG)
    assert [(f.kind, f.severity, f.classes) for f in out] == [
        ("background_reliance", "high", ["cat"]), ("property_shortcut", "low", ["dog"])]
    card = out[0]
    assert card.message.startswith("Class 'cat' relies on its backgrounds: their brightness departs")
    assert card.message.endswith("Cats are brighter.") and "Not confirmed" not in card.message
    assert card.metrics["background_effect"] > abs(card.metrics["object_effect"])
    assert ("background_reliance.object_score" in card.metrics) == (maps_said == "low")
    # backgrounds that depart less than a property must to be reported (objects and all darker): a property card
    strict = dataclasses.replace(CFG, property_min_effect=card.metrics["background_effect"] + 0.01)
    assert absorb_property(findings, records, thumbs, masks, ["cat", "dog"], strict) == findings
    # the model check left it low (not used): it stays a property finding; brighter objects: another cause
    unused = [dataclasses.replace(f, severity="low") for f in findings]
    assert absorb_property(unused, records, thumbs, masks, ["cat", "dog"], CFG) == unused
    objects, o_records, o_thumbs, o_masks = property_run(on_background=False)
    objects = objects[1:]
    assert absorb_property(objects, o_records, o_thumbs, o_masks, ["cat", "dog"], CFG) == objects


def test_a_frame_found_at_a_corner_and_at_a_straight_side_is_one_finding():
    """A 2 px frame on a class's images, one cluster along the left edge (its images differ most from other
    classes' at a corner: the window holds two sides) and one along the right edge between the corners (one side):
    the two windows differ, but the straight side shows in the left edge's region, so they are one cause."""
    rng = np.random.default_rng(0)
    n, others = 20, 80
    thumbs = rng.integers(40, 120, size=(n + others, 3, SIZE, SIZE)).astype(np.uint8)
    thumbs[:n, :, :2, :], thumbs[:n, :, -2:, :], thumbs[:n, :, :, :2], thumbs[:n, :, :, -2:] = 230, 230, 230, 230
    records = pd.DataFrame({"id": [f"i{r}" for r in range(n + others)], "row": np.arange(n + others),
                            "label_idx": np.r_[np.zeros(n, int), np.ones(others, int)]})
    left, right = [0.0, 0.0, 0.25, 1.0], [0.75, 0.25, 1.0, 0.75]
    findings = [Finding(kind="strategy_cluster", severity=severity, classes=["cat"], region=region,
                        samples=[f"i{r}" for r in rows], metrics={"cluster_share": 0.5}, message=side)
                for severity, region, rows, side in (("high", left, range(10), "left"),
                                                     ("medium", right, range(10, 20), "right"))]
    members = torch.from_numpy(thumbs[:10].astype(np.float32))
    references = torch.from_numpy(thumbs[n:].astype(np.float32))
    window = CFG.place_pixel_window / 2
    corner, side = appearance(members, references, left, window), appearance(
        torch.from_numpy(thumbs[10:20].astype(np.float32)), references, right, window)
    assert corner.patch[:, 0, :].mean() > 200 and corner.patch[:, :, 0].mean() > 200  # two sides of the frame
    assert difference(corner.patch, side.patch) / corner.scale > CFG.group_max_difference  # apart as patches
    (f,) = one_cause(findings, records, thumbs, ["cat", "dog"], CFG)
    assert f.metrics["places"] == 2 and f.region == left and len(f.samples) == 20
