"""Issue 11's rules, both ways, on hand-made runs: findings that hold without masks, on broken models, and label
errors ranked over the whole run. Hand-made runs come from tests/test_findings.py's `HandMadeRun`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from auditor.findings import find_all, model_health_state
from auditor.findings.model_health import health_figures, mean_normalised_entropy
from auditor.findings.place_evidence import with_place_evidence
from auditor.findings.run import write_findings
from auditor.place_check import pixel_std, place_figures
from auditor.findings import suspected_label_error
from auditor.findings.context import Context
from auditor.findings.suspected_label_error import label_error_suspects
from auditor.runs import save_npy_atomic
from tests.test_findings import (
    CFG, CORNER, HandMadeRun, blob, clean_run, corner_run, of_kind, probs_of, square, write_run,
)

# ------------------------------------------------------------------------------------------------ model health


def collapsed_run() -> HandMadeRun:
    """A model that names 'cat' for every image; the dogs' maps also go to a corner (a would-be shortcut)."""
    run, _ = corner_run()
    for row in run.rows:
        if row["label"] != "cat":
            row.update(pred="cat", pred_idx=0, correct=False, p_pred=0.5, p_true=0.2)
    return run


def test_health_figures_by_hand():
    run = HandMadeRun()
    for label, pred in [("cat", "cat"), ("cat", "dog"), ("dog", "dog"), ("dog", "dog"), ("bird", "dog"), ("bird", "dog")]:
        run.add(label, square(2, 2, 5), "object", pred=pred, p_true=0.4, p_pred=0.6)
    records, *_ = run.arrays()
    fig = health_figures(records, None, CFG)
    # recalls: cat 1/2, dog 2/2, bird 0/2 -> balanced 0.5; chance 1/3; skill (0.5 - 1/3) / (2/3) = 0.25
    assert fig["balanced_accuracy"] == pytest.approx(0.5) and fig["skill"] == pytest.approx(0.25)
    assert fig["top_pred_share"] == pytest.approx(5 / 6) and fig["top_pred_label_share"] == pytest.approx(2 / 6)
    assert fig["classes_predicted"] == 2 and fig["accuracy"] == pytest.approx(0.5)
    assert fig["dead_classes"] == 0  # each class has 2 images, under min_support: too few to call dead
    few = dataclasses.replace(CFG, min_support=2)
    assert health_figures(records, None, few)["dead"] == [run.classes.index("bird")]  # recall 0 <= 0.05; cat 0.5
    uniform = np.full((6, 3), 1 / 3)
    assert health_figures(records.assign(row=np.arange(6)), uniform, CFG)["mean_normalised_entropy"] == pytest.approx(1.0)


def test_a_collapsed_model_is_broken_and_caps_every_other_finding():
    findings, _ = find_all(*collapsed_run().arrays(), CFG)
    (health,) = of_kind(findings, "model_health")
    assert health.severity == "high" and health.id == "F001" and model_health_state(findings) == "broken"
    assert "predicts 'cat' for 100%" in health.message and health.classes == ["cat"]
    assert all(f.severity == "low" for f in findings if f.kind != "model_health")


def test_a_working_model_gets_no_health_finding_and_keeps_its_severities():
    run, _ = corner_run()
    findings, _ = find_all(*run.arrays(), CFG)
    assert of_kind(findings, "model_health") == [] and model_health_state(findings) == "ok"
    assert [f.severity for f in of_kind(findings, "spatial_shortcut")] == ["high"]


def test_near_uniform_probabilities_are_broken_even_at_good_accuracy(tmp_path):
    run, _ = clean_run()
    write_run(tmp_path, run)
    save_npy_atomic(tmp_path / "probs.npy", np.full((len(run.rows), 3), 1 / 3, dtype=np.float16))
    doc = write_findings(tmp_path, CFG)
    assert doc["findings"][0]["kind"] == "model_health" and "nearly uniform" in doc["findings"][0]["message"]


def test_a_weak_model_is_suspect_not_broken():
    run, _ = clean_run()
    rng = np.random.default_rng(0)
    for row in run.rows:  # about 45 % right on 3 classes: skill about 0.2
        if rng.random() < 0.55:
            other = (row["label_idx"] + 1) % 3
            row.update(pred=run.classes[other], pred_idx=other, correct=False, p_pred=0.5, p_true=0.3)
    (health,) = of_kind(find_all(*run.arrays(), CFG)[0], "model_health")
    assert health.severity == "medium" and model_health_state([health]) == "suspect"


# ------------------------------------------------------------------------------------ labels ranked globally


def two_pairs(has_mask: bool) -> tuple[HandMadeRun, list[str], list[str]]:
    """An ambiguous pair confused often but without confidence, and a small flipped pair, confidently wrong."""
    run, rng = clean_run()
    ambiguous = [run.add("cat", square(*run.place(rng, 5), 5), "object", pred="dog", p_true=0.35, p_pred=0.6,
                         has_mask=has_mask) for _ in range(8)]  # fmt: skip
    flipped = [run.add("bird", square(*run.place(rng, 5), 5), "object", pred="cat", p_true=0.01 + 0.001 * i,
                       p_pred=0.98, has_mask=has_mask) for i in range(4)]  # fmt: skip
    return run, ambiguous, flipped


@pytest.mark.parametrize("has_mask", [True, False])
def test_label_errors_csv_ranks_the_flips_first_across_pairs(tmp_path, has_mask):
    run, ambiguous, flipped = two_pairs(has_mask)
    write_run(tmp_path, run)
    save_npy_atomic(tmp_path / "probs.npy", probs_of(run).astype(np.float16))
    doc = write_findings(tmp_path, CFG)
    table = pd.read_csv(tmp_path / "label_errors.csv", keep_default_na=False)
    assert list(table["id"][:4]) == flipped  # the larger ambiguous pair no longer fills the top
    assert set(table["id"]) <= set(flipped) | set(ambiguous)
    pairs = [f for f in doc["findings"] if f["kind"] == "suspected_label_error"]
    assert pairs[0]["pair"] == {"true": "bird", "pred": "cat"}  # most of the top-ranked suspects: first
    flips = pairs[0]["metrics"]
    assert flips["top_ranked"] == 4 and flips["share_of_top_ranked"] > 0.5


def test_a_pair_whose_suspects_all_rank_low_is_not_raised_by_its_count():
    run, ambiguous, flipped = two_pairs(has_mask=False)
    records, maps, masks, classes = run.arrays()
    findings, _ = find_all(records, maps, masks, classes, CFG, probs=probs_of(run))
    by_pair = {tuple(f.classes): f for f in of_kind(findings, "suspected_label_error")}
    if ("cat", "dog") in by_pair:  # cleanlab may flag some: then below the flipped pair in rank and severity
        cat_dog, bird_cat = by_pair[("cat", "dog")], by_pair[("bird", "cat")]
        assert cat_dog.metrics["top_ranked"] < bird_cat.metrics["top_ranked"]
        assert cat_dog.metrics["rate"] <= cat_dog.metrics["count_rate"]



def test_wrong_labels_the_model_is_unsure_of_are_suspects_too_ranked_with_their_pair():
    """Every mistake is a candidate (cleanlab's predicted_neq_given): a less confident model predicts part of the
    flips below the predicted class's self-confidence, where confident learning's thresholds drop them."""
    run, rng = clean_run()
    sure = [run.add("bird", square(*run.place(rng, 5), 5), "object", pred="cat", p_true=0.01, p_pred=0.98)
            for _ in range(4)]  # fmt: skip
    unsure = [run.add("bird", square(*run.place(rng, 5), 5), "object", pred="cat", p_true=0.02, p_pred=0.55)
              for _ in range(4)]  # fmt: skip  # cats are called cat at 0.9: these are far below
    records, probs = run.arrays()[0], probs_of(run)
    ranked = label_error_suspects(records, CFG, probs=probs)
    assert set(ranked["id"][:8]) == set(sure + unsure)
    strict = dataclasses.replace(CFG, label_error_filter="prune_by_noise_rate")
    assert not set(unsure) & set(label_error_suspects(records, strict, probs=probs)["id"])


# ---------------------------------------------------------------------------------- mask-free place evidence


def test_a_centred_clean_class_without_masks_raises_nothing_above_low():
    rng = np.random.default_rng(3)
    run = HandMadeRun()
    for label in ("cat", "bird"):
        for _ in range(30):
            y, x = run.place(rng, 5)
            run.add(label, square(y, x, 5), blob(y + 2, x + 2), has_mask=False)
    for _ in range(30):  # every dog in the middle: the maps stay there as a watermark's would
        y, x = (int(v) for v in rng.integers(5, 7, size=2))
        run.add("dog", square(y, x, 5), blob(y + 2, x + 2), has_mask=False)
    findings, _ = find_all(*run.arrays(), CFG)
    assert findings and all(f.severity == "low" for f in findings)


class CornerDetector(nn.Module):
    """Says class 1 when the top-right 4 x 4 pixels are bright, else class 0: a model that uses a watermark."""

    def forward(self, x):
        patch = x[:, :, :4, -4:].mean(dim=(1, 2, 3))
        return torch.stack([0.5 - patch, patch - 0.5], dim=1) * 10


def objects(n: int, rng, centred: bool, watermark: bool) -> torch.Tensor:
    images = torch.from_numpy(rng.random((n, 1, 16, 16)).astype(np.float32) * 0.2)
    for image in images:
        y, x = (int(v) for v in rng.integers(5, 7, size=2)) if centred else (int(v) for v in rng.integers(4, 8, size=2))
        image[0, y : y + 5, x : x + 5] = torch.from_numpy(rng.random((5, 5)).astype(np.float32))  # varied object
        if watermark:
            image[0, :4, -4:] = 1.0
    return images


def test_place_figures_tell_a_watermark_from_a_centred_object():
    rng = np.random.default_rng(0)
    model = CornerDetector()
    references = objects(32, rng, centred=False, watermark=False)
    corner = [0.75, 0.0, 1.0, 0.25]
    marked = place_figures(model, objects(12, rng, False, True), references, corner, 1, "cpu", seed=0)
    assert marked["pixel_std_ratio"] < 0.05  # the same pixels in every image
    assert marked["transplant_rate"] == 1.0 and marked["transplant_control_rate"] == 0.0 and marked["transplant_n"] == 32
    centre = [0.3125, 0.3125, 0.6875, 0.6875]
    centred = place_figures(model, objects(12, rng, True, False), references, centre, 1, "cpu", seed=0)
    assert centred["pixel_std_ratio"] > 0.7  # objects differ from image to image
    assert centred["transplant_rate"] == 0.0


class FrameDetector(nn.Module):
    """Says class 1 when the outermost pixels are bright, else class 0: a model that uses a frame."""

    def forward(self, x):
        ring = torch.ones(x.shape[-2:], dtype=torch.bool)
        ring[1:-1, 1:-1] = False
        bright = x[:, :, ring].mean(dim=(1, 2))
        return torch.stack([0.5 - bright, bright - 0.5], dim=1) * 10


def test_place_figures_on_a_frame_paste_and_erase_the_whole_band_against_the_band_inside_it():
    rng = np.random.default_rng(0)
    references = objects(32, rng, centred=True, watermark=False)
    framed = objects(12, rng, centred=True, watermark=False)
    framed[:, :, [0, -1], :] = 1.0
    framed[:, :, :, [0, -1]] = 1.0
    bottom = [0.0, 0.875, 1.0, 1.0]  # the strongest side, the finding's region
    figures = place_figures(FrameDetector(), framed, references, bottom, 1, "cpu", seed=0, border=0.0625)
    assert figures["pixel_std_ratio"] < 0.05  # the same pixels on every framed image
    assert figures["transplant_rate"] == 1.0 and figures["transplant_control_rate"] == 0.0  # the band inside: no frame
    assert figures["erased_rate"] == 0.0 and figures["erased_control_rate"] == 1.0
    one_side = place_figures(FrameDetector(), framed, references, bottom, 1, "cpu", seed=0)
    assert one_side["transplant_rate"] == 0.0  # one side alone is not the frame this model needs


def test_mean_normalised_entropy_by_hand_and_in_blocks():
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    # ln 2 / ln 2 = 1; 0; -(0.25 ln 0.25 + 0.75 ln 0.75) / ln 2 = 0.8113
    assert mean_normalised_entropy(probs, np.array([0, 1])) == pytest.approx(0.5)
    assert mean_normalised_entropy(probs, np.array([2])) == pytest.approx(0.811278, abs=1e-6)
    wide = np.full((3, 2**20), 2.0**-20, dtype=np.float16)  # a million classes: one row per block, each uniform
    assert mean_normalised_entropy(wide, np.arange(3)) == pytest.approx(1.0, abs=1e-6)


def test_pixel_std_by_hand():
    images = torch.tensor([[[[0.0, 1.0], [2.0, 2.0]]], [[[2.0, 1.0], [2.0, 2.0]]]])  # [2, 1, 2, 2]
    mask = torch.tensor([[True, True], [False, False]])
    # pixel (0, 0): 0 and 2 -> std (unbiased) sqrt(2); pixel (0, 1): 1 and 1 -> 0; mean sqrt(2) / 2
    assert pixel_std(images, mask) == pytest.approx(2**0.5 / 2)


def test_place_evidence_lowers_a_finding_checked_against_masks_only_where_the_model_does_not_use_the_place():
    run, _ = corner_run()
    (f,) = of_kind(find_all(*run.arrays(), CFG)[0], "spatial_shortcut")
    inert = {"pixel_std_ratio": 0.9, "transplant_rate": 0.0, "transplant_control_rate": 0.0}
    # merged with the class's background_reliance: the background may be used where this place is not
    judged = with_place_evidence(f, inert, CFG)
    assert judged.severity == f.severity == "high" and judged.metrics["pixel_std_ratio"] == 0.9
    place_only = dataclasses.replace(f, metrics={k: v for k, v in f.metrics.items() if "." not in k})
    unused = with_place_evidence(place_only, inert, CFG)
    assert unused.severity == "low" and unused.message.endswith("the model does not use what is there.")
    # erasing it loses the class for 0.25 more of its images than the control (>= erasure_min_effect 0.2): used
    needed = with_place_evidence(place_only, {**inert, "erased_rate": 0.7, "erased_control_rate": 0.95}, CFG)
    assert needed.severity == "high"
    untested = with_place_evidence(place_only, {"pixel_std_ratio": 0.9}, CFG)  # the model not run: the maps stand
    assert untested.severity == "high"


def test_causal_region_erasing_confirms_a_mask_free_place_only_once_its_pixels_rule_out_the_object():
    from auditor.findings.run import apply_causal

    run, _ = corner_run(has_mask=False)
    (f,) = of_kind(find_all(*run.arrays(), CFG)[0], "spatial_shortcut")
    row = {"class": "dog", "n": 30, "accuracy": 1.0, "n_masked": 0, "background_only_accuracy": float("nan"),
           "background_only_baseline": float("nan"), "n_region": 30, "shortcut_removed_accuracy": 0.1,
           "region": json.dumps(f.region)}  # fmt: skip
    causal = pd.DataFrame([row])
    (unchecked,) = apply_causal([f], causal, CFG)
    assert unchecked.severity == "low"  # erasing what may be the object proves nothing about a shortcut
    same = with_place_evidence(f, {"pixel_std_ratio": 0.05}, CFG)
    (confirmed,) = apply_causal([same], causal, CFG)
    assert confirmed.severity == "high" and "confirmed" in confirmed.message


def test_with_place_evidence_keeps_the_figures_in_metrics():
    run, _ = corner_run(has_mask=False)
    (f,) = of_kind(find_all(*run.arrays(), CFG)[0], "spatial_shortcut")
    judged = with_place_evidence(f, {"pixel_std_ratio": 0.1, "region_pixel_std": 0.01, "reference_pixel_std": 0.1,
                                     "transplant_rate": 0.2, "transplant_control_rate": 0.1}, CFG)  # fmt: skip
    assert judged.severity == "medium"  # same pixels, but pasting them changes little: not high
    assert {"pixel_std_ratio", "region_pixel_std", "transplant_rate"} <= set(judged.metrics)
    assert dataclasses.replace(judged, metrics={}).region == f.region


def test_label_independence_by_hand():
    from auditor.findings.suspected_label_error import label_independence

    # Thresholds (mean p(label) over each label's images): class 1 (0.65 + 0.9 + 0.95 + 0.2) / 4 = 0.675, class 0
    # (0.45 + 0.08 + 0.7 + 0.9) / 4 = 0.5325. Confident predictions of 1 (p(1) >= 0.675): the 0 with p(0) = 0.08 and
    # the 1s with p(0) = 0.1, 0.05; p(0) ranks the labelled 0 above one of two: AUC 1/2, independence 1. Counting
    # the unconfident 0 (p(0) = 0.45) too would give AUC 4/6 and independence 2/3: the ambiguous image would say
    # the label is explained. Predicted 0: the labelled 1 with p(1) = 0.2 against p(1) = 0.3, 0.1: independence 1.
    p0 = np.array([0.45, 0.08, 0.35, 0.1, 0.05, 0.8, 0.7, 0.9])
    labels, preds = np.array([0, 0, 1, 1, 1, 1, 0, 0]), np.array([1, 1, 1, 1, 1, 0, 0, 0])

    def records_of(p0):
        probs = np.array([p0, 1 - p0]).T
        rows = np.arange(8)
        return pd.DataFrame({"row": rows, "label_idx": labels, "pred_idx": preds, "p_true": probs[rows, labels],
                             "p_pred": probs[rows, preds]}), probs  # fmt: skip

    records, probs = records_of(p0)
    suspects = records.iloc[[0, 1, 5]]
    independence = label_independence(records, probs, suspects, CFG)
    assert independence["label_independence"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    # One image labelled t and two labelled p in each pair, AUC 1/2: its standard error (Hanley & McNeil) is
    # sqrt((1/4 + 0 + 1 x (1/3 - 1/4)) / 2) = sqrt(1/6), so independence_low = 1 - 2 sqrt(1/6): three images say little
    assert independence["independence_low"].tolist() == pytest.approx([1 - 2 * np.sqrt(1 / 6)] * 3)
    no_probs = label_independence(records, None, suspects, CFG)  # no probs.npy: no evidence either way
    assert no_probs["label_independence"].tolist() == [1.0] * 3 and no_probs["independence_low"].tolist() == [1.0] * 3
    # The confident 0 now more 0-like than every confident 1 (p(0) 0.12, still confident at p(1) 0.88): AUC 1,
    # independence 0, the label explained; the other pair unchanged.
    records, probs = records_of(np.where(np.arange(8) == 1, 0.12, p0))
    independence = label_independence(records, probs, records.iloc[[0, 1, 5]], CFG)
    assert independence["label_independence"].tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert independence["independence_low"].tolist() == pytest.approx([0.0, 0.0, 1 - 2 * np.sqrt(1 / 6)])


def look_alikes_and_flips(has_mask: bool) -> tuple[HandMadeRun, list[str], list[str], np.ndarray]:
    """A large pair of look-alike classes (the cats predicted dog are the most cat-like of the dogs' predictions)
    and a smaller flipped pair (birds labelled cat, as cat-like as the true cats' images: their label says
    nothing about the image), both confidently wrong."""
    run, rng = clean_run()
    look_alike = [run.add("cat", square(*run.place(rng, 5), 5), "object", pred="dog", p_true=0.3, p_pred=0.7,
                          has_mask=has_mask) for _ in range(12)]  # fmt: skip
    flipped = [run.add("cat", square(*run.place(rng, 5), 5), "object", pred="bird", p_true=0.05 + 0.01 * (i % 3),
                       p_pred=0.9, has_mask=has_mask) for i in range(8)]  # fmt: skip
    probs = probs_of(run)
    records, *_ = run.arrays()
    birds = (records["label"] == "bird").to_numpy()
    probs[birds, 0] = 0.05 + 0.01 * (np.arange(birds.sum()) % 3)  # the true birds: p(cat) as the flipped ones
    probs[birds] /= probs[birds].sum(axis=1, keepdims=True)
    return run, look_alike, flipped, probs


@pytest.mark.parametrize("has_mask", [True, False])
def test_flips_the_images_do_not_explain_outrank_a_larger_look_alike_pair_which_stays_below_high(has_mask):
    run, look_alike, flipped, probs = look_alikes_and_flips(has_mask)
    records, maps, masks, classes = run.arrays()
    findings, _ = find_all(records, maps, masks, classes, CFG, probs=probs)
    by_pair = {tuple(f.classes): f for f in of_kind(findings, "suspected_label_error")}
    flips = by_pair[("cat", "bird")]
    suspects = label_error_suspects(records, CFG, probs=probs)
    alike_independence = suspects.loc[suspects["id"].isin(look_alike), "label_independence"]
    assert flips.metrics["label_independence"] > 0.8 and (alike_independence < 0.2).all()
    assert set(suspects["id"][: len(flipped)]) == set(flipped)  # every flip ahead of the look-alikes
    assert set(suspects["id"][len(flipped):]) <= set(look_alike)
    assert "labels do not follow what the images show" in flips.message and "between 'cat' and 'bird'" in flips.message
    alike = by_pair.get(("cat", "dog"))  # reported only if some of its suspects rank among the likely wrong labels
    assert alike is None or (alike.severity != "high" and "look alike" in alike.message)
    context = Context(records, maps, masks, classes, CFG, probs=probs)
    in_rule_order = suspected_label_error.find(records, maps, masks, classes, CFG, context=context)
    assert in_rule_order[0].classes == ["cat", "bird"]  # label_errors.csv's order


def test_a_labelling_fault_comes_first_and_spread_errors_follow_in_cleanlabs_order_by_hand():
    """A pair of 8 sure mistakes with independent labels (no probs.npy: nothing says otherwise) is a labelling
    fault: suspicion 1 + its pair score (how surely its labels are independent: 1, with no probabilities to say
    otherwise) + 0.01 x sureness 1 = 2.01. Pairs of one or two (as errors spread over
    a real test set fall) follow by 1 - p(label), whatever their pair: the lone dog -> bird at p(label) 0.001 before
    the two dog -> cat, which the pair score alone put first (2 / 12 against 1 / 11)."""
    run, rng = clean_run()
    fault = [run.add("bird", square(*run.place(rng, 5), 5), "object", pred="cat", p_true=0.02, p_pred=0.96,
                     has_mask=False) for _ in range(8)]  # fmt: skip
    pair = [run.add("dog", square(*run.place(rng, 5), 5), "object", pred="cat", p_true=p, p_pred=0.95, has_mask=False)
            for p in (0.2, 0.05)]  # fmt: skip
    lone = run.add("dog", square(*run.place(rng, 5), 5), "object", pred="bird", p_true=0.001, p_pred=0.99,
                   has_mask=False)
    suspects = label_error_suspects(run.arrays()[0], CFG)
    assert list(suspects["id"]) == [*fault, lone, pair[1], pair[0]]
    assert suspects["suspicion"].tolist() == pytest.approx([1 + 1 + 0.01] * 8 + [0.999, 0.95, 0.8], abs=1e-6)
    assert label_error_suspects(run.arrays()[0], dataclasses.replace(CFG, label_error_min_pair_sure=9))[
        "suspicion"].max() == pytest.approx(0.999, abs=1e-6)  # one sure mistake short: no fault, cleanlab's order


def test_a_pair_is_a_labelling_fault_only_when_its_labels_are_surely_independent_by_hand():
    """9 birds predicted cat (p 0.93, all sure) against the 30 cats' p(bird) 0.05. With 4 of the birds at p(bird)
    0.06 (above every cat) and 5 at 0.02: U = 4 x 30 = 120 of 270, AUC 0.444, independence 1; Hanley-McNeil: q1 =
    0.444/1.556, q2 = 2 x 0.444^2/1.444, variance (0.247 + 8 (q1 - 0.198) + 29 (q2 - 0.198)) / 270 = 0.0117, standard
    error 0.108: independence_low 1 - 2 x (0.553 - 0.5) = 0.895, a fault: suspicion 1 + 0.895 + 0.01. With 5 at 0.06:
    AUC 150/270 = 0.556, independence 0.889, standard error 0.112, independence_low 1 - 2 x 0.168 = 0.664, below 0.75:
    not surely independent (a look-alike pair past the bar by chance reads so), cleanlab's order, 1 - p(label)."""
    def suspects(above):
        run, rng = clean_run()
        for i in range(9):
            run.add("bird", square(*run.place(rng, 5), 5), "object", pred="cat", p_true=0.06 if i < above else 0.02,
                    p_pred=0.93, has_mask=False)
        return label_error_suspects(run.arrays()[0], CFG, probs=probs_of(run))

    fault, chance = suspects(4), suspects(5)
    assert fault["label_independence"].tolist() == pytest.approx([1.0] * 9)
    assert fault["independence_low"].tolist() == pytest.approx([0.895] * 9, abs=1e-3)
    assert fault["suspicion"].tolist() == pytest.approx([1 + 0.895 + 0.01] * 9, abs=1e-3)
    assert chance["label_independence"].tolist() == pytest.approx([0.889] * 9, abs=1e-3)
    assert chance["independence_low"].tolist() == pytest.approx([0.664] * 9, abs=1e-3)
    assert chance["suspicion"].tolist() == pytest.approx([0.98] * 4 + [0.94] * 5)


def test_a_surely_independent_pair_counts_its_unsure_suspects_toward_its_severity():
    """A model trained on the same wrong labels gives each of them the noise's share of the label's probability, so
    few are sure. 16 of 106 birds predicted cat: 8 sure (p 0.93, p(bird) 0.02 below every cat's 0.05: AUC 0,
    standard error 0, independence_low 1) and 8 not (p 0.6, p(bird) 0.3); and 8 sure dogs predicted cat whose p(dog)
    0.06 is above every cat's (AUC 1: look-alikes, cleanlab's order, after the fault pair), so cleanlab's estimate
    (16), the top-ranked count, takes in the 8 unsure birds. Sure: 8 / 106 = 0.075, under label_error_high_rate;
    counted, the 16 top-ranked birds: 0.151, high. The same with the sure birds' p(bird) above the cats' (the images
    explain the labels) count the sure ones only: medium."""
    def label_card(sure_p_label):
        run, rng = clean_run()
        run.clean(rng, "bird", n=60, avoid_corner=True)
        for i in range(16):
            sure = i < 8
            run.add("bird", square(*run.place(rng, 5), 5), "object", pred="cat", p_true=sure_p_label if sure else 0.3,
                    p_pred=0.93 if sure else 0.6, has_mask=False)
        for _ in range(8):
            run.add("dog", square(*run.place(rng, 5), 5), "object", pred="cat", p_true=0.06, p_pred=0.92,
                    has_mask=False)
        records, maps, masks, classes = run.arrays()
        findings = find_all(records, maps, masks, classes, CFG, probs=probs_of(run))[0]
        return next(f for f in of_kind(findings, "suspected_label_error") if f.pair["true"] == "bird")

    fault = label_card(0.02)
    assert fault.metrics["independence_low"] == 1.0
    assert (fault.metrics["confident_top_ranked"], fault.metrics["top_ranked"]) == (8, 16)
    assert fault.metrics["rate"] == pytest.approx(8 / 106, abs=1e-4)
    assert fault.metrics["counted_rate"] == pytest.approx(16 / 106, abs=1e-4)
    assert fault.severity == "high"
    alike = label_card(0.06)
    assert alike.metrics["label_independence"] == 0.0 and alike.metrics["confident_top_ranked"] == 8
    assert alike.metrics["counted_rate"] == alike.metrics["rate"] == pytest.approx(8 / 106, abs=1e-4)
    assert alike.severity == "medium"

def test_a_look_alike_pair_alone_at_the_top_is_medium_at_most():
    run, rng = clean_run()
    for _ in range(12):
        run.add("cat", square(*run.place(rng, 5), 5), "object", pred="dog", p_true=0.08, p_pred=0.91, has_mask=False)
    records, maps, masks, classes = run.arrays()
    probs = probs_of(run)

    def severity(cfg):
        findings, _ = find_all(records, maps, masks, classes, cfg, probs=probs)
        (f,) = of_kind(findings, "suspected_label_error")
        return f.severity, f.metrics["top_ranked"]

    assert severity(CFG) == ("medium", 12)  # all 12 top-ranked: high by count, but the images explain the labels
    assert severity(dataclasses.replace(CFG, label_error_min_independence=0.0)) == ("high", 12)


def test_same_pixels_that_change_nothing_when_pasted_stay_low():
    run, _ = corner_run(has_mask=False)
    (f,) = of_kind(find_all(*run.arrays(), CFG)[0], "spatial_shortcut")
    inert = with_place_evidence(f, {"pixel_std_ratio": 0.08, "transplant_rate": 0.0, "transplant_control_rate": 0.06},
                                CFG)  # fmt: skip  # e.g. the empty corner beside a real digit: absence, not an artefact
    assert inert.severity == "low" and "does not use" in inert.message


def test_check_places_reads_the_images_and_raises_a_mask_free_watermark(tmp_path):
    """End to end on files: an ImageFolder without masks, a model that uses a corner patch, one place finding."""
    from auditor.config import DataConfig
    from auditor.data import AuditDataset, build_samples
    from auditor.findings import Finding
    from auditor.place_check import check_places
    from auditor.sources import write_image_folder

    rng = np.random.default_rng(0)
    marked = (objects(12, rng, centred=False, watermark=True)[:, 0].numpy() * 255).astype(np.uint8)
    plain = (objects(36, rng, centred=False, watermark=False)[:, 0].numpy() * 255).astype(np.uint8)
    images = np.concatenate([plain, marked])
    labels = [0] * len(plain) + [1] * len(marked)
    ids = [f"{i:03d}" for i in range(len(images))]
    write_image_folder(tmp_path / "data", None, images, None, labels, ["plain", "marked"], ids)
    cfg = DataConfig(root=str(tmp_path / "data"), grayscale=True, mean=[0.0], std=[1.0])
    samples, classes = build_samples(cfg, ["plain", "marked"])
    dataset = AuditDataset(samples, cfg)
    finding = Finding(kind="spatial_shortcut", severity="low", classes=["marked"], region=[0.75, 0.0, 1.0, 0.25],
                      samples=[s.id for s in samples if s.label == 1], metrics={"hit_rate": 1.0, "gap_ci_low": 0.6},
                      message="Class 'marked' keeps looking at the top-right corner (no masks).")  # fmt: skip
    centre = dataclasses.replace(finding, region=[0.3125, 0.3125, 0.6875, 0.6875])
    checked = check_places([finding, centre], CornerDetector(), dataset, classes, "cpu", CFG)
    corner, middle = checked
    assert corner.metrics["pixel_std_ratio"] < 0.05 and corner.metrics["transplant_rate"] == 1.0
    assert corner.severity == "high"
    assert middle.severity == "low" and middle.metrics["pixel_std_ratio"] > CFG.place_max_pixel_std_ratio

    # With the sweep's thumbs (here the images themselves, as a 32-px audit keeps them) the pixels are measured
    # there: the same figures, and the finding the pixels decide decodes no file.
    from auditor.place_check import Pixels
    from auditor.timing import recording, work_counts

    rows = {i: int(sample.id.split("/")[1].removesuffix(".png")) for i, sample in enumerate(samples)}
    thumbs = Pixels(dataset, images[:, None], rows)  # dataset index -> its image's row
    with recording():
        (again,) = check_places([centre], CornerDetector(), dataset, classes, "cpu", CFG, thumbs=thumbs)
        work = work_counts()["place_check"]
    assert again.metrics == pytest.approx(middle.metrics) and again.severity == middle.severity
    assert "images_read" not in work and work["thumbs_read"] == 48
    with recording():
        (again,) = check_places([finding], CornerDetector(), dataset, classes, "cpu", CFG, thumbs=thumbs)
        work = work_counts()["place_check"]
    assert again.metrics == pytest.approx(corner.metrics) and again.severity == "high"
    assert work["images_read"] > 0  # the model's passes need the files


def test_beside_the_peak_erases_each_maps_main_blob_only():
    from auditor.findings.strategy_cluster import beside_the_peak

    one = np.zeros((1, 4, 4), dtype=np.float32)
    one[0, 1, 1], one[0, 1, 2], one[0, 3, 3] = 1.0, 0.6, 0.4  # a blob of two cells and a weaker, separate cell
    out = beside_the_peak(one, threshold=0.5)
    assert out[0, 1, 1] == 0 and out[0, 1, 2] == 0 and out[0, 3, 3] == pytest.approx(0.4)
    assert one[0, 1, 1] == 1.0  # the input is left as it was


def test_erasing_the_peak_lets_spray_separate_a_patch_beside_the_object():
    """The premise, on one hand-made class: whole maps group by where each object lies; with each map's main blob
    erased, the half that also holds a weaker corner patch separates (as off_object does with masks)."""
    from auditor.findings.context import class_maps
    from auditor.findings.strategy_cluster import beside_the_peak, spray_clusters

    rng = np.random.default_rng(6)
    run = HandMadeRun()
    patched = []
    for i in range(40):  # every map peaks on its object; half also hold a corner patch at 0.45 of the peak
        y, x = run.place(rng, 5, avoid_corner=True)
        attention = blob(y + 2, x + 2, sigma=1.0) + (0.45 * CORNER if i % 2 else 0)
        image_id = run.add("dog", square(y, x, 5), attention, has_mask=False)
        if i % 2:
            patched.append(image_id)
    records, maps, _, _ = run.arrays()
    share = class_maps(maps, records)
    is_patched = records["id"].isin(patched).to_numpy()

    def purity(features):
        labels, k, _ = spray_clusters(features, CFG)
        return np.mean([max(is_patched[labels == j].mean(), 1 - is_patched[labels == j].mean()) for j in range(k)])

    assert purity(share) < 0.6 and purity(beside_the_peak(share, CFG.region_threshold)) > 0.95


def test_place_figures_skip_the_model_once_the_pixels_have_decided():
    rng = np.random.default_rng(0)

    class Counting(CornerDetector):
        calls = 0

        def forward(self, x):
            Counting.calls += 1
            return super().forward(x)

    references = objects(16, rng, centred=False, watermark=False)
    centre = [0.3125, 0.3125, 0.6875, 0.6875]
    figures = place_figures(Counting(), objects(8, rng, True, False), references, centre, 1, "cpu", seed=0,
                            pixels_decide_above=CFG.place_max_pixel_std_ratio)  # fmt: skip
    assert figures["pixel_std_ratio"] > CFG.place_max_pixel_std_ratio and "transplant_rate" not in figures
    assert Counting.calls == 0


# ------------------------------------------------------------------- marks that do not win the maps' peaks


def steady_mark_run(has_mask=True, seed=0) -> HandMadeRun:
    """Dogs whose maps peak on a large object but keep a steady share at the top-right corner (a mark beside a
    coat draws part of every map, never its peak); cats and birds look at their objects only."""
    rng = np.random.default_rng(seed)
    run = HandMadeRun()
    for label in ("cat", "bird", "dog"):
        for _ in range(30):
            y, x = run.place(rng, 7, avoid_corner=True)
            attention = blob(y + 3, x + 3, sigma=2.0)
            run.add(label, square(y, x, 7), attention + 0.8 * CORNER if label == "dog" else attention,
                    has_mask=has_mask)
    return run


@pytest.mark.parametrize("has_mask", [True, False])
def test_spatial_shortcut_finds_a_mark_that_draws_a_steady_share_without_winning_the_peaks(has_mask):
    run = steady_mark_run(has_mask)
    (f,) = of_kind(run.find()[0], "spatial_shortcut")
    assert f.classes == ["dog"] and f.metrics["hit_rate"] < CFG.shortcut_min_hit_rate
    assert f.severity == ("medium" if has_mask else "low")  # without masks: low until the place evidence
    assert f.region[0] >= 0.5 and f.region[3] <= 0.5  # the top-right quadrant
    peaks_only = dataclasses.replace(CFG, shortcut_min_share_gap=1.0)  # the rule before: peaks had to be there
    assert not of_kind(run.find(peaks_only)[0], "spatial_shortcut")


def test_erasure_figures_by_hand_on_a_model_that_needs_the_corner():
    rng = np.random.default_rng(0)
    references = objects(32, rng, centred=False, watermark=False)
    figures = place_figures(CornerDetector(), objects(12, rng, False, True), references, [0.75, 0.0, 1.0, 0.25], 1,
                            "cpu", seed=0)  # fmt: skip
    assert figures["erased_rate"] == 0.0  # the corner gone, none is the class
    assert figures["erased_control_rate"] == 1.0  # a random same-size region gone elsewhere, all still are


def test_a_mask_free_place_the_class_needs_but_that_turns_no_other_image_is_medium():
    """A cue half a class carries: pasting it onto other classes' images changes nothing, erasing it from the
    class's own images loses the class; below erasure_min_effect (beyond the random region) it stays low."""
    run, _ = corner_run(has_mask=False)
    (f,) = of_kind(find_all(*run.arrays(), CFG)[0], "spatial_shortcut")
    inert = {"pixel_std_ratio": 0.05, "transplant_rate": 0.02, "transplant_control_rate": 0.0}
    needed = with_place_evidence(f, {**inert, "erased_rate": 0.5, "erased_control_rate": 1.0}, CFG)
    assert needed.severity == "medium" and "erased" in needed.message
    barely = with_place_evidence(f, {**inert, "erased_rate": 0.9, "erased_control_rate": 1.0}, CFG)
    assert barely.severity == "low" and "does not use" in barely.message
    varied = with_place_evidence(f, {**inert, "pixel_std_ratio": 0.6, "erased_rate": 0.0, "erased_control_rate": 1.0},
                                 CFG)  # fmt: skip  # erasing an object loses its class too: pixels decide first
    assert varied.severity == "low"


def test_pixel_std_ratio_weights_each_pixel_by_the_squared_contrast_by_hand():
    from auditor.place_check import pixel_std_ratio

    # two pixels; donors [n=2]: pixel a 1, 1 (std 0), pixel b 0, 2 (std sqrt 2); references: a 0, 0, b 1, 1 (std 0)
    donors = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 2.0]]]])
    references = torch.tensor([[[[0.0, 1.0]]], [[[0.0, 1.0]]]])
    mask = torch.tensor([[True, True]])
    # contrast: a (1 - 0)^2 = 1, b (1 - 1)^2 = 0 -> only pixel a counts: donors' std 0, references' std 0 -> NaN
    d, r, ratio = pixel_std_ratio(donors, references, mask)
    assert d == 0.0 and r == 0.0 and np.isnan(ratio)
    references = torch.tensor([[[[0.0, 0.0]]], [[[2.0, 1.0]]]])  # a: 0, 2 (mean 1, std sqrt 2); b: 0, 1 (mean 0.5)
    # contrast: a (1 - 1)^2 = 0, b (1 - 0.5)^2 = 0.25 -> only pixel b: donors' std sqrt 2, references' sqrt 0.5
    d, r, ratio = pixel_std_ratio(donors, references, mask)
    assert d == pytest.approx(2**0.5) and r == pytest.approx(0.5**0.5) and ratio == pytest.approx(2.0)


def three_class_places(tmp_path):
    """90 random 16 x 16 images of classes a, b, c (every third), the checks' settings for them, and a maker of
    one place finding per class (its first 8 images, the top-left quarter)."""
    from auditor.config import DataConfig
    from auditor.data import AuditDataset, build_samples
    from auditor.findings import Finding
    from auditor.sources import write_image_folder

    rng = np.random.default_rng(1)
    images = (objects(90, rng, centred=False, watermark=False)[:, 0].numpy() * 255).astype(np.uint8)
    labels = [i % 3 for i in range(90)]
    write_image_folder(tmp_path / "data", None, images, None, labels, ["a", "b", "c"], [f"{i:03d}" for i in range(90)])
    cfg = DataConfig(root=str(tmp_path / "data"), grayscale=True, mean=[0.0], std=[1.0])
    samples, classes = build_samples(cfg, ["a", "b", "c"])
    place_check = dataclasses.replace(CFG, place_check_images=16, place_max_pixel_std_ratio=10.0)

    def finding(cls: int, severity: str = "low") -> Finding:
        return Finding(kind="spatial_shortcut", severity=severity, classes=[classes[cls]], region=[0.0, 0.0, 0.5, 0.5],
                       samples=[s.id for s in samples if s.label == cls][:8], metrics={"hit_rate": 1.0},
                       message="A place.")  # fmt: skip

    return AuditDataset(samples, cfg), classes, place_check, finding


def test_check_places_gives_a_finding_the_same_references_whatever_comes_before_it(tmp_path):
    from auditor.place_check import check_places

    dataset, classes, place_check, finding = three_class_places(tmp_path)
    alone = check_places([finding(2)], CornerDetector(), dataset, classes, "cpu", place_check)
    after = check_places([finding(0), finding(1), finding(2)], CornerDetector(), dataset, classes, "cpu", place_check)
    assert alone[0].metrics["reference_pixel_std"] == after[2].metrics["reference_pixel_std"]


def test_check_places_tests_the_most_severe_findings_within_the_runs_forward_passes(tmp_path):
    from auditor.budget import counting_forwards
    from auditor.place_check import check_places, place_test_cost
    from auditor.timing import recording, work_counts

    dataset, classes, place_check, finding = three_class_places(tmp_path)
    predictions = {i: 0 for i in range(90)}  # the sweep called every image 'a'

    # by hand: 8 donors erased twice (16), and of class b's 16 references those the sweep did not call 'b' (all
    # 16: every image was called 'a') pasted twice (32): 48; for class a, its references were all called 'a': 16
    assert place_test_cost(8, list(range(1, 90, 3))[:16], 1, predictions) == 48
    assert place_test_cost(8, list(range(1, 90, 3))[:16], 0, predictions) == 16
    assert place_test_cost(8, list(range(16)), 1, None) == 16 + 48  # without predictions the references run once more

    findings = [finding(1, "low"), finding(2, "high"), finding(1, "medium")]
    notes: list[str] = []
    model = CornerDetector()
    with recording(), counting_forwards(model):
        checked = check_places(findings, model, dataset, classes, "cpu", place_check,
                               predictions=predictions, forwards=60, notes=notes)
        work = work_counts()
    tested = ["erased_rate" in f.metrics for f in checked]
    assert tested == [False, True, False]  # the high one first (48 passes); the next (48 more) would pass 60
    assert [f.severity for f in checked] == ["low", checked[1].severity, "low"]  # no masks: untested stay low
    assert work["place_check"]["forward_images"] == 48
    assert notes == ["Place check: 2 place finding(s) not tested on the model, the run's forward passes for it (60: "
                     "auditor.budget.RUN_SHARE) spent on the more severe ones; without masks they stay low, with masks "
                     "they keep the maps' severity."]
    unlimited = check_places(findings, CornerDetector(), dataset, classes, "cpu", place_check, predictions=predictions)
    assert all("erased_rate" in f.metrics for f in unlimited)


def test_class_wide_erasure_does_not_refute_a_place_the_findings_own_images_need():
    from auditor.findings.causal_evidence import with_causal

    run, _ = corner_run(has_mask=False)
    (f,) = of_kind(find_all(*run.arrays(), CFG)[0], "spatial_shortcut")
    row = {"class": "dog", "accuracy": 0.95, "n_masked": 0, "background_only_accuracy": float("nan"),
           "background_only_baseline": float("nan"), "n_region": 60, "shortcut_removed_accuracy": 0.9,
           "region_control_accuracy": 0.92, "region": json.dumps(f.region)}  # half the class carries it: diluted
    place = {"pixel_std_ratio": 0.05, "transplant_rate": 0.02, "transplant_control_rate": 0.0}
    needed = with_place_evidence(f, {**place, "erased_rate": 0.2, "erased_control_rate": 1.0}, CFG)
    assert with_causal(needed, row, CFG).severity == "medium"
    pasted = with_place_evidence(f, {**place, "transplant_rate": 0.2, "erased_rate": 1.0, "erased_control_rate": 1.0},
                                 CFG)  # fmt: skip
    assert pasted.severity == "medium" and with_causal(pasted, row, CFG).severity == "low"


def test_a_pair_with_no_suspect_among_the_likely_wrong_labels_gets_no_finding_but_stays_in_the_csv(tmp_path):
    run, rng = clean_run()
    flipped = [run.add("bird", square(*run.place(rng, 5), 5), "object", pred="cat", p_true=0.01, p_pred=0.98,
                       has_mask=False) for _ in range(6)]  # fmt: skip
    confused = [run.add("dog", square(*run.place(rng, 5), 5), "object", pred="cat", p_true=0.45, p_pred=0.5,
                        has_mask=False) for _ in range(4)]  # fmt: skip  # ordinary, unsure mistakes
    write_run(tmp_path, run)
    save_npy_atomic(tmp_path / "probs.npy", probs_of(run).astype(np.float16))
    doc = write_findings(tmp_path, CFG)
    pairs = [f["pair"] for f in doc["findings"] if f["kind"] == "suspected_label_error"]
    assert pairs == [{"true": "bird", "pred": "cat"}]
    table = pd.read_csv(tmp_path / "label_errors.csv", keep_default_na=False).set_index("id")
    assert set(confused) <= set(table.index) and (table.loc[confused, "finding"] == "").all()
    assert table.loc[flipped, "rank"].max() < table.loc[confused, "rank"].min()


def bird_cat_pair(p_pred: float, cats_called_cat: float = 0.9, cfg=CFG):
    """The one label-error pair of a clean run with 8 of its 38 birds labelled independently of the image and
    predicted cat at p_pred; the cats are called cat at `cats_called_cat` (confident learning's threshold)."""
    run, rng = clean_run()
    for row in run.rows:
        if row["label"] == "cat":
            row.update(p_true=cats_called_cat, p_pred=cats_called_cat)
    for _ in range(8):
        run.add("bird", square(*run.place(rng, 5), 5), "object", pred="cat", p_true=0.02, p_pred=p_pred)
    records, maps, masks, classes = run.arrays()
    findings, _ = find_all(records, maps, masks, classes, cfg, probs=probs_of(run))
    found = of_kind(findings, "suspected_label_error")
    assert len(found) <= 1
    return found[0] if found else None


def test_a_pair_of_unsure_mistakes_is_listed_but_not_raised_by_them():
    """Every mistake ranks in label_errors.csv, but severity counts only the top-ranked suspects the model is as
    sure of as of the predicted class's own images: unsure confusions of look-alikes are not labelling faults."""
    sure, unsure = bird_cat_pair(0.97), bird_cat_pair(0.55)  # cats are called cat at 0.9
    assert sure.severity == "high" and sure.metrics["confident_top_ranked"] == 8
    # cleanlab estimates one wrong label among the unsure: fewer top-ranked than label_error_min_count, no card
    assert unsure is None
    unsure = bird_cat_pair(0.55, cfg=dataclasses.replace(CFG, label_error_min_count=1))
    assert unsure.metrics["top_ranked"] > 0 and unsure.metrics["confident_top_ranked"] == 0
    assert unsure.severity == "low"


def test_suspects_count_toward_severity_only_where_the_model_prefers_their_class_outright():
    """A hard predicted class sets a low confident-learning threshold (cats called cat at 0.375): mistakes at 0.45
    pass it, yet the model does not prefer cat over all other classes together. They stay listed, low; the same
    pair at 0.6 counts all 8, medium: no cat is called cat surely, so nothing to compare the birds' p(bird) with
    says their labels are surely independent (independence_low 0). With the threshold alone the cats are sure
    too, their p(bird) (0.3125) above every bird's (0.02): independent labels, and the pair is high."""
    unsure, sure = bird_cat_pair(0.45, cats_called_cat=0.375), bird_cat_pair(0.6, cats_called_cat=0.375)
    assert unsure.metrics["threshold"] == pytest.approx(0.375) and unsure.metrics["top_ranked"] == 8
    assert unsure.metrics["confident_top_ranked"] == 0 and unsure.severity == "low"
    assert sure.metrics["confident_top_ranked"] == 8 and sure.severity == "medium"
    assert sure.metrics["independence_low"] == 0.0
    lenient = dataclasses.replace(CFG, label_error_min_p_pred=0.0)  # confident learning's threshold alone
    lenient = bird_cat_pair(0.45, cats_called_cat=0.375, cfg=lenient)
    assert lenient.metrics["confident_top_ranked"] == 8 and lenient.severity == "high"
    assert lenient.metrics["independence_low"] == 1.0


def test_a_model_that_never_names_a_class_is_suspect_and_says_which():
    run, _ = clean_run()
    birds = [row for row in run.rows if row["label"] == "bird"]
    for i, row in enumerate(birds):  # 30 birds, every one called cat or dog: a dead class in a working model
        other = ("cat", "dog")[i % 2]
        row.update(pred=other, pred_idx=run.classes.index(other), correct=False, p_pred=0.8, p_true=0.1)
    (health,) = of_kind(find_all(*run.arrays(), CFG)[0], "model_health")
    assert health.severity == "medium" and model_health_state([health]) == "suspect"
    assert "'bird'" in health.message and health.metrics["dead_classes"] == 1
    working, _ = clean_run()
    assert not of_kind(find_all(*working.arrays(), CFG)[0], "model_health")


def test_rank_auc_matches_sklearn_with_ties_and_by_hand():
    from sklearn.metrics import roc_auc_score

    from auditor.findings.stats import rank_auc

    # positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9 > 0.5), (0.9 > 0.1), (0.5 = 0.5: half), (0.5 > 0.1) -> 3.5 / 4
    assert rank_auc(np.array([True, True, False, False]), np.array([0.9, 0.5, 0.5, 0.1])) == pytest.approx(0.875)
    assert rank_auc(np.array([True, True]), np.array([0.2, 0.3])) == 0.5  # one side empty
    rng = np.random.default_rng(0)
    for _ in range(20):
        positive = rng.random(40) < 0.3
        score = np.round(rng.random(40), 1)  # many ties
        if 0 < positive.sum() < len(positive):
            assert rank_auc(positive, score) == pytest.approx(roc_auc_score(positive, score))


def test_distinctive_window_by_hand():
    from auditor.place_check import distinctive_window

    # 1-channel 6 x 6 images; the region is the right half (x 3..5). Donors and references differ at (1, 4) by 2
    # (energy 4) and at (4, 3) by 1 (energy 1); a 2 x 2 window can hold only one of them: it takes the larger.
    references = torch.zeros(2, 1, 6, 6)
    donors = torch.zeros(2, 1, 6, 6)
    donors[:, 0, 1, 4] = 2.0
    donors[:, 0, 4, 3] = 1.0
    donors[:, 0, 1, 0] = 5.0  # outside the region: never chosen
    region = torch.zeros(6, 6, dtype=torch.bool)
    region[:, 3:] = True
    window = distinctive_window(donors, references, region, side=2)
    assert window.sum() == 4 and bool(window[1, 4]) and not window[4, 3] and not window[:, :3].any()
    assert (window & ~region).sum() == 0
    # A window larger than the region is the region.
    small = torch.zeros(6, 6, dtype=torch.bool)
    small[4:6, 4:6] = True
    assert torch.equal(distinctive_window(donors, references, small, side=4), small)


def test_a_small_mark_in_a_large_region_is_told_from_the_object_beside_it():
    """A coarse grid's region (here 12 x 12 of 16 x 16 px) holds a 3 x 3 mark and most of a varied object: over the
    whole region the object waters the mark's constancy down; in its most distinctive window the mark decides."""
    rng = np.random.default_rng(0)

    def images(n, mark):
        out = torch.from_numpy(rng.random((n, 1, 16, 16)).astype(np.float32) * 0.2)
        for image in out:
            y, x = (int(v) for v in rng.integers(2, 6, size=2))
            image[0, y : y + 9, x : x + 9] = torch.from_numpy(0.3 + 0.7 * rng.random((9, 9)).astype(np.float32))
            if mark:
                image[0, 13:16, 13:16] = 1.0
        return out

    donors, references = images(12, mark=True), images(32, mark=False)
    region = [0.25, 0.25, 1.0, 1.0]
    figures = place_figures(CornerDetector(), donors, references, region, 1, "cpu", seed=0,
                            pixels_decide_above=CFG.place_max_pixel_std_ratio)  # fmt: skip
    assert figures["region_pixel_std_ratio"] > CFG.place_max_pixel_std_ratio  # the object is in the region too
    assert figures["pixel_std_ratio"] < 0.05  # the window on the mark: the same pixels every time
    unmarked = place_figures(CornerDetector(), images(12, mark=False), references, region, 1, "cpu", seed=0,
                             pixels_decide_above=CFG.place_max_pixel_std_ratio)  # fmt: skip
    assert unmarked["pixel_std_ratio"] > 0.5 and "transplant_rate" not in unmarked  # objects vary: the pixels decide


def test_auc_standard_error_by_hand_and_against_a_bootstrap():
    from auditor.findings.stats import auc_standard_error, rank_auc

    # A = 0.5, 10 and 10: Q1 = Q2 = 1/3, A^2 = 0.25: (0.25 + 9 x (1/12) + 9 x (1/12)) / 100 = 0.0175
    assert auc_standard_error(0.5, 10, 10) == pytest.approx(np.sqrt(0.0175))
    # A = 0.8, 4 and 6: Q1 = 0.8 / 1.2, Q2 = 1.28 / 1.8; (0.16 + 3 (Q1 - 0.64) + 5 (Q2 - 0.64)) / 24
    q1, q2 = 0.8 / 1.2, 1.28 / 1.8
    assert auc_standard_error(0.8, 4, 6) == pytest.approx(np.sqrt((0.16 + 3 * (q1 - 0.64) + 5 * (q2 - 0.64)) / 24))
    assert auc_standard_error(0.7, 0, 5) == 0.5 and auc_standard_error(0.7, 5, 0) == 0.5  # nothing to go on
    rng = np.random.default_rng(0)  # independent check: the spread of the AUC over resampled images
    positive = np.r_[np.ones(60, bool), np.zeros(240, bool)]
    score = np.r_[rng.normal(0.5, 1, 60), rng.normal(0, 1, 240)]
    auc = rank_auc(positive, score)
    boot = [rank_auc(positive[i], score[i]) for i in (rng.integers(0, 300, 300) for _ in range(400))]
    assert auc_standard_error(auc, 60, 240) == pytest.approx(np.std(boot), rel=0.2)
