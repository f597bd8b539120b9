"""Poisson noise of the zero-shot papers (``Poisson(lambda x) / lambda``, unclipped), named
apart from ImageNet-C's clipped shot noise, and kept out of every other cell's fingerprint."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark import provenance
from benchmark.degradation_kinds import DEGRADATIONS, degrade
from benchmark.photon_noise import poisson_counts


@pytest.mark.parametrize("lam", [50, 10])
def test_counts_have_the_mean_and_variance_of_the_formula(lam: float) -> None:
    x = np.full((201, 199, 1), 0.3, np.float32)
    y = poisson_counts(x, lam, np.random.default_rng(0)).observation.y
    var = 0.3 / lam  # Var[Poisson(lambda x) / lambda] = x / lambda
    assert abs(y.mean() - 0.3) < 5 * np.sqrt(var / y.size)
    assert abs(y.var() - var) / var < 0.03
    np.testing.assert_allclose(y * lam, np.round(y * lam), atol=1e-4)  # counts / lambda


def test_unclipped_where_the_imagenet_c_shot_noise_is_clipped() -> None:
    bright = np.full((64, 63, 3), 0.95, np.float32)
    counts = degrade(bright, "poisson_counts", 10, np.random.default_rng(1)).observation
    shot = degrade(bright, "poisson", 10, np.random.default_rng(1)).observation
    assert counts.y.max() > 1.5 and shot.y.max() <= 1.0
    # the same draws: where the counts stay under 1 the two agree
    under = counts.y <= 1
    np.testing.assert_allclose(counts.y[under], shot.y[under], atol=1e-6)
    assert counts.params == {"kind": "poisson_counts", "level": 10, "lambda": 10, "clip": False}
    assert counts.task == "denoising"


def test_same_seed_same_output_and_a_bad_lambda_is_named() -> None:
    image = np.random.default_rng(9).random((37, 31, 3)).astype(np.float32)
    a = degrade(image, "poisson_counts", 50, np.random.default_rng(1)).observation.y
    b = degrade(image, "poisson_counts", 50, np.random.default_rng(1)).observation.y
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="lambda > 0"):
        poisson_counts(image, 0, np.random.default_rng(1))


def test_only_its_own_cells_carry_its_file() -> None:
    """Registered from a module of its own: a cell of a packaged degradation has the
    fingerprint it had before the model was added; a poisson_counts cell adds this file."""
    assert DEGRADATIONS["poisson_counts"] is poisson_counts
    plain = provenance.code_identity("dip")
    for kind in ("gaussian", "poisson", "downsample", "bernoulli"):
        assert provenance.code_identity("dip", degradation=kind) == plain
    counts = provenance.code_identity("dip", degradation="poisson_counts")
    assert set(counts["files"]) - set(plain["files"]) == {"benchmark/photon_noise.py"}
