"""Near-duplicate images with different labels: the cheapest label errors to confirm (one of the two is wrong).

The sweep keeps each image's target-layer activations averaged over the cells, L2-normalised (`image_features`,
RUN_DIR/features.npy): two copies of an image, or one re-encoded, slightly cropped or brightened, land at nearly
the same point. `conflicting_pairs` finds, per query image, its most similar images of another label by chunked
matrix products (memory bounded by one chunk of rows x N, never N x N), and keeps those above a threshold.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from auditor.timing import count, stage

FEATURE_DIMS = 256  # wider layers are projected to this many dims: 50,000 images x 256 x float16 = 25 MB
_PROJECTION_SEED = 0  # fixed: every run projects alike, so features of two runs of one model compare
_CHUNK_CELLS = 1 << 22  # similarities per chunk (16 MB of float32): bounds the search's memory whatever N is


@functools.lru_cache(maxsize=4)
def _projection(channels: int, device: str) -> torch.Tensor:
    """A fixed Gaussian random projection [C, FEATURE_DIMS]: preserves cosines up to about 1/sqrt(256)
    (Johnson-Lindenstrauss), which is enough to keep copies (cosine ~1) apart from distinct images."""
    generator = torch.Generator().manual_seed(_PROJECTION_SEED)
    matrix = torch.randn(channels, FEATURE_DIMS, generator=generator) / FEATURE_DIMS**0.5
    return matrix.to(device)


def image_features(pooled: torch.Tensor) -> torch.Tensor:
    """Pooled activations [B, C] -> the stored features [B, D], D = min(C, FEATURE_DIMS), unit length (0 where
    the activations were all 0 or not finite)."""
    pooled = torch.nan_to_num(pooled.float(), nan=0.0, posinf=0.0, neginf=0.0)
    if pooled.shape[1] > FEATURE_DIMS:
        pooled = pooled @ _projection(pooled.shape[1], str(pooled.device))
    return F.normalize(pooled, dim=1)


def search_device() -> torch.device:
    """The search runs after the sweep from the run directory alone: on the GPU where there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def centred(features: torch.Tensor) -> torch.Tensor:
    """Features less the run's mean feature, unit length again. Every image shares the mean (a narrow layer's pooled
    activations all point about the same way): measured on the MNIST LeNet's 16 channels, an image's nearest
    distinct image of another label sits at median cosine 0.995 raw, 0.93 centred, while exact copies stay at 1."""
    return F.normalize(features - features.mean(dim=0), dim=1)


def nearest_other_label(features, labels, queries, k: int, device: torch.device | None = None, centre: bool = True):
    """For each query row, its k most similar rows of another label: (similarity [Q, k], row [Q, k]) as numpy,
    similarity -inf where fewer than k rows have another label; with `centre`, similarity of `centred` features.
    Chunks of query rows against all rows."""
    device = device or search_device()
    keys = torch.as_tensor(np.array(features), device=device).float()  # a copy: memory-mapped arrays are read-only
    keys = centred(keys) if centre and len(keys) > 1 else keys
    key_labels = torch.as_tensor(np.array(labels), device=device)
    queries = np.asarray(queries, dtype=np.int64)
    k = min(k, len(keys))
    chunk = max(1, _CHUNK_CELLS // max(len(keys), 1))
    sims, rows = [], []
    for start in range(0, len(queries), chunk):
        part = torch.as_tensor(queries[start: start + chunk], device=device)
        similarity = keys[part] @ keys.T  # [chunk, N]
        similarity.masked_fill_(key_labels[part][:, None] == key_labels[None, :], float("-inf"))  # self too
        top = similarity.topk(k, dim=1)
        sims.append(top.values.cpu())
        rows.append(top.indices.cpu())
    if not sims:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return torch.cat(sims).numpy(), torch.cat(rows).numpy()


PAIR_COLUMNS = ("a", "b", "similarity")  # records rows, a < b


def conflicting_pairs(features, labels, min_similarity: float, k: int = 5, queries=None,
                      device: torch.device | None = None, centre: bool = True) -> pd.DataFrame:
    """Pairs of rows with different labels and (centred) feature cosine similarity >= min_similarity, most similar
    first, each once. `queries` (default: every row) are the rows whose neighbours are searched; every row is a
    neighbour, so a pair is found when either member is a query."""
    queries = np.arange(len(labels)) if queries is None else np.asarray(queries, dtype=np.int64)
    with stage("duplicates_s"):
        count(feature_rows=len(queries))
        sims, rows = nearest_other_label(features, labels, queries, k, device, centre)
        query, slot = np.nonzero(sims >= min_similarity)
        a, b = queries[query], rows[query, slot]
        pairs = pd.DataFrame({"a": np.minimum(a, b), "b": np.maximum(a, b),
                              "similarity": sims[query, slot].astype(float)})
        pairs = pairs.drop_duplicates(["a", "b"]).sort_values(["similarity", "a", "b"], ascending=[False, True, True])
    return pairs.reset_index(drop=True)


def query_rows(p_true, most: int) -> np.ndarray:
    """The rows to search from: all of them up to `most`, else the `most` the model believes least in their
    label (lowest p_true): of a conflicting pair the model can agree with one label only, so the other member,
    the likelier wrong one, is among its disagreements. Keeps the search linear in N beyond the cap."""
    p_true = np.nan_to_num(np.asarray(p_true, dtype=float), nan=-1.0)
    if len(p_true) <= most:
        return np.arange(len(p_true))
    return np.sort(np.argsort(p_true, kind="stable")[:most])
