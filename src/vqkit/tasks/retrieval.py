"""Image retrieval by bag-of-codes similarity.

Two images are similar when they use the same codes in the same proportions, wherever they sit:
  cosine        h_q . h_i / (|h_q| |h_i|)
  intersection  sum_k min(h_q[k], h_i[k])  (histogram intersection, Swain & Ballard 1991)
Both are 1 for identical histograms. Equal histograms (likely with small grids) are ordered by the
cosine similarity of the pooled continuous latents, so an image found in the data ranks first.
"""

from __future__ import annotations

import numpy as np

METRICS = ("cosine", "intersection")


def _cosine(query: np.ndarray, items: np.ndarray) -> np.ndarray:
    q = query / max(float(np.linalg.norm(query)), 1e-12)
    n = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    return n @ q


def similarity(query: np.ndarray, items: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """query (F,), items (N, F) -> (N,) similarities."""
    if metric == "cosine":
        return _cosine(query.astype(np.float64), items.astype(np.float64))
    if metric == "intersection":
        return np.minimum(items, query[None]).sum(axis=1)
    raise ValueError(f"unknown similarity {metric!r}; choose from {', '.join(METRICS)}")


def rank(
    query: np.ndarray,
    items: np.ndarray,
    k: int,
    metric: str = "cosine",
    query_tiebreak: np.ndarray | None = None,
    items_tiebreak: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar items: (positions (k,), similarities (k,)), most similar first.
    Similarities are rounded to 12 decimals before ranking, so floating-point noise never beats the
    tie-break (cosine similarity of ``*_tiebreak`` features, e.g. pooled latents)."""
    scores = similarity(query, items, metric)
    keys = [np.arange(len(items)), -np.round(scores, 12)]
    if query_tiebreak is not None and items_tiebreak is not None:
        keys.insert(1, -_cosine(query_tiebreak.astype(np.float64), items_tiebreak.astype(np.float64)))
    order = np.lexsort(keys)[: min(k, len(items))]  # last key is the primary one
    return order, scores[order]
