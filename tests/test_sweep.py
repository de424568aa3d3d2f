"""The sweep loop's own behaviour: batches halved on CUDA out-of-memory errors."""

import numpy as np
import pytest
import torch

from auditor.sweep import audit_in_chunks


def _batch(count):
    return {"index": torch.arange(count), "image": torch.zeros(count, 1, 2, 2), "mask": torch.zeros(count, 2, 2),
            "has_mask": torch.zeros(count, dtype=torch.bool), "label": torch.zeros(count, dtype=torch.long),
            "note": [""] * count, "failed": []}


def test_out_of_memory_halves_the_batch_and_keeps_every_row():
    calls = []

    def audit(part):
        calls.append(len(part["index"]))
        if len(part["index"]) > 3:
            raise torch.cuda.OutOfMemoryError("fake")
        return {"index": part["index"].numpy() * 10}

    result, chunk = audit_in_chunks(audit, _batch(10), 10)
    assert chunk == 2  # 10 -> 5 -> 2
    assert result["index"].tolist() == [i * 10 for i in range(10)]
    assert calls[:2] == [10, 5] and all(c <= 2 for c in calls[2:])
    # The next batch starts at the smaller size: no failed attempt.
    calls.clear()
    result, chunk = audit_in_chunks(audit, _batch(4), chunk)
    assert calls == [2, 2] and chunk == 2


def test_out_of_memory_at_one_image_is_raised():
    def audit(part):
        raise torch.cuda.OutOfMemoryError("fake")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        audit_in_chunks(audit, _batch(2), 2)


def test_chunks_of_a_batch_equal_the_whole():
    def audit(part):
        return {"index": part["index"].numpy(), "value": part["index"].float().numpy() ** 2}

    whole, _ = audit_in_chunks(audit, _batch(7), 7)
    parts, _ = audit_in_chunks(audit, _batch(7), 3)
    for key in whole:
        assert np.array_equal(whole[key], parts[key])
