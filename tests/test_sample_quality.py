"""The Fréchet distance of benchmarks/sample_quality.py (benchmark code, imported from the checkout)."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.sample_quality import frechet_distance, frechet_from_stats


def test_frechet_distance_matches_the_closed_form() -> None:
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2 = 1 + (1 + 0 + 4) = 6.
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, 0.0])
    c1, c2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    assert frechet_from_stats(mu1, c1, mu2, c2) == pytest.approx(6.0, abs=1e-9)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))  # a rotation changes nothing
    assert frechet_from_stats(q @ mu1, q @ c1 @ q.T, q @ mu2, q @ c2 @ q.T) == pytest.approx(6.0, abs=1e-9)
    feats = np.random.default_rng(1).normal(size=(500, 8))
    assert abs(frechet_distance(feats, feats)) < 1e-9
    assert frechet_distance(feats, feats + 2.0) == pytest.approx(8 * 4.0, rel=1e-9)
