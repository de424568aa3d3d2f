"""benchmarks/label_regimes.py: the precision at k it prints and the flips it drops, by hand."""

import numpy as np
import pandas as pd

from benchmarks.label_regimes import precision_at_k, thinned


def test_precision_at_k_by_hand():
    flipped = {"a", "c"}
    assert precision_at_k(["a", "b", "c", "d"], flipped, 2) == 0.5  # a of a, b
    assert precision_at_k(["c", "a", "b"], flipped, 2) == 1.0
    assert np.isnan(precision_at_k(["a"], flipped, 0))


def test_thinned_drops_a_seeded_share_of_the_flips_only():
    records = pd.DataFrame({"id": [f"i{n}" for n in range(10)]})
    flipped = {f"i{n}" for n in range(6)}
    kept = thinned(records, flipped, 0.5)
    assert len(kept) == 7 and set(kept["id"]) >= {"i6", "i7", "i8", "i9"}  # 3 of 6 flips dropped, others kept
    assert list(thinned(records, flipped, 0.5)["id"]) == list(kept["id"])  # seeded
    assert thinned(records, flipped, 1.0) is records


def test_relabelled_into_moves_right_predictions_of_the_source_only():
    from benchmarks.label_regimes import relabelled_into

    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.7, 0.0, 0.3], [0.1, 0.9, 0.0], [0.9, 0.05, 0.05]],
                     dtype=np.float16)
    records = pd.DataFrame({
        "row": range(5), "id": list("abcde"), "label": ["src", "src", "src", "cue", "src"],
        "label_idx": [0, 0, 0, 1, 0], "correct": [True, True, False, True, True],
        "p_true": np.array([0.9, 0.8, 0.7, 0.9, 0.9], dtype=np.float32), "true_energy_in_mask": [0.5] * 5,
    })
    moved_records, moved = relabelled_into(records, probs, "src", flipped={"e"}, into=["cue", "src"], n=5)
    assert moved == {"a", "b"}  # right and not flipped: c is wrong, e a planted flip; nothing into its own class
    rows = moved_records.set_index("id").loc[["a", "b"]]
    assert list(rows["label"]) == ["cue", "cue"] and list(rows["label_idx"]) == [1, 1]
    assert not rows["correct"].any() and rows["true_energy_in_mask"].isna().all()
    assert np.allclose(rows["p_true"], [0.1, 0.2], atol=1e-3)  # the probability of the new label
    assert records["label"].tolist()[0] == "src"  # the caller's records are left alone
    assert relabelled_into(records, probs, "src", set(), ["cue"], 0) == (records, set())


def test_scattered_relabels_right_predictions_as_another_class_each():
    from benchmarks.label_regimes import scattered

    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]],
                     dtype=np.float16)
    records = pd.DataFrame({
        "row": range(5), "id": list("abcde"), "label": ["x", "y", "z", "y", "z"], "label_idx": [0, 1, 2, 1, 2],
        "correct": [True, True, True, False, True], "p_true": np.array([0.9, 0.8, 0.6, 0.3, 0.8], dtype=np.float32),
        "true_energy_in_mask": [0.5] * 5,
    })
    spread_records, spread = scattered(records, probs, flipped={"e"}, n=5)
    assert spread == {"a", "b", "c"}  # right and not flipped: d is wrong, e a planted flip
    before, after = records.set_index("id").loc[sorted(spread)], spread_records.set_index("id").loc[sorted(spread)]
    assert (after["label_idx"] != before["label_idx"]).all()  # another class each
    assert [dict(zip([0, 1, 2], "xyz"))[t] for t in after["label_idx"]] == list(after["label"])
    assert not after["correct"].any() and after["true_energy_in_mask"].isna().all()
    rows = after["row"].to_numpy()
    assert np.allclose(after["p_true"], probs[rows, after["label_idx"].to_numpy()].astype(float), atol=1e-3)
    assert scattered(records, probs, {"e"}, 5)[0].equals(spread_records)  # seeded
    assert scattered(records, probs, set(), 0) == (records, set())


def test_discounted_mixes_the_fault_pairs_order_with_cleanlabs_by_hand():
    """Suspicion above 1: a labelling-fault pair's suspect (the audit puts it first); else 1 - p(label)."""
    from benchmarks.label_regimes import discounted

    ranked = pd.DataFrame({"id": ["f1", "f2", "s1", "s2"], "suspicion": [1.6, 1.5, 0.999, 0.9],
                           "p_true": [0.2, 0.05, 0.001, 0.1], "p_pred": [0.8, 0.9, 0.99, 0.9]})
    assert list(discounted(ranked, 0.0)) == ["f1", "f2", "s1", "s2"]  # the audit's order, as ranked
    assert list(discounted(ranked, 1.0)) == ["s1", "f2", "s2", "f1"]  # cleanlab's: 0.001, 0.05, 0.1, 0.2
    assert list(discounted(ranked, 0.1)) == ["s1", "f2", "f1", "s2"]  # 0.001, 0.1 x 0.05, 0.1 x 0.2, 0.1
