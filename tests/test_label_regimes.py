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
