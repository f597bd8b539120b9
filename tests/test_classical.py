"""Classical baselines: PSNR-gain floors on small odd-size crops (deepinv style), bad input."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark import degradations as deg
from benchmark.images import load_image
from benchmark.methods import METHODS, get_method, restore
from benchmark.methods.classical import anscombe, inverse_anscombe
from benchmark.metrics import psnr


@pytest.fixture(scope="module", params=["gray", "color"])
def crop(request: pytest.FixtureRequest, mirror: object) -> np.ndarray:
    """A 67x61 crop of House: real structure, odd size."""
    if request.param == "gray":
        return load_image("bm3d_gray11", "house")[60:127, 70:131]
    return load_image("cbm3d_color9", "house")[90:157, 100:161]


def _gain(method: str, degraded: deg.Degraded) -> float:
    out = restore(method, degraded.observation, seed=0)
    return psnr(out, degraded.target) - psnr(degraded.observation.y, degraded.target)


# Floors (dB) at sigma 15 and 50, about 60% of what the methods reach on these crops, so a
# broken noise level or parameter crosses them.
GAUSSIAN_FLOORS = {
    "bm3d": (5.0, 8.0),
    "nlm": (4.0, 6.0),
    "nlm_blind": (4.0, 6.0),
    "tv": (3.5, 6.0),
    "wavelet": (3.0, 5.0),
    "median": (2.4, 3.8),
    "bilateral": (2.0, 3.0),
    "gaussian_filter": (2.5, 5.5),
}


@pytest.mark.parametrize("method", list(GAUSSIAN_FLOORS))
def test_denoisers_beat_gaussian_noise_by_a_floor(method: str, crop: np.ndarray) -> None:
    for sigma, floor in zip((15, 50), GAUSSIAN_FLOORS[method], strict=True):
        gain = _gain(method, deg.gaussian(crop, sigma, np.random.default_rng(1)))
        assert gain >= floor, f"{method} at sigma={sigma}: gain {gain:.2f} dB < {floor} dB"


@pytest.mark.parametrize(("c", "floor"), [(60, 6.0), (12, 8.0)])
def test_bm3d_with_anscombe_on_poisson_noise(c: float, floor: float, crop: np.ndarray) -> None:
    assert _gain("bm3d", deg.poisson(crop, c, np.random.default_rng(2))) >= floor


@pytest.mark.parametrize(("amount", "floor"), [(0.03, 7.0), (0.09, 9.0)])
def test_median_on_salt_and_pepper(amount: float, floor: float, crop: np.ndarray) -> None:
    assert _gain("median", deg.salt_pepper(crop, amount, np.random.default_rng(3))) >= floor


@pytest.mark.parametrize("method", ["biharmonic", "telea", "navier_stokes"])
@pytest.mark.parametrize(("kind", "level"), [("bernoulli", 0.5), ("bernoulli", 0.8), ("text", 0.5)])
def test_inpainting_gain_floor(method: str, kind: str, level: float, crop: np.ndarray) -> None:
    degraded = deg.degrade(crop, kind, level, np.random.default_rng(4))
    out = restore(method, degraded.observation)
    assert psnr(out, crop) - psnr(degraded.observation.y, crop) >= 10.0
    known = degraded.observation.mask[..., 0] == 1
    np.testing.assert_allclose(out[known], crop[known], atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("method", ["bicubic", "bicubic_opencv", "lanczos"])
@pytest.mark.parametrize("factor", [2, 4])
def test_super_resolution_beats_pixel_replication(
    method: str, factor: int, crop: np.ndarray
) -> None:
    degraded = deg.downsample(crop, factor)
    out = restore(method, degraded.observation)
    assert out.shape == degraded.target.shape
    replicated = degraded.observation.y.repeat(factor, 0).repeat(factor, 1)
    assert psnr(out, degraded.target) - psnr(replicated, degraded.target) >= 1.2


def test_anscombe_inverse_is_unbiased_for_moderate_counts() -> None:
    rng = np.random.default_rng(5)
    for lam in (2.0, 10.0, 50.0):
        counts = rng.poisson(lam, 200_000).astype(np.float64)
        # The exact unbiased inverse maps the mean of the transformed counts back to lam.
        assert inverse_anscombe(np.full(1, anscombe(counts).mean()))[0] == pytest.approx(
            lam, rel=0.02
        )


def test_registry_names_and_errors() -> None:
    assert {
        "bm3d",
        "cbm3d",
        "nlm",
        "tv",
        "wavelet",
        "median",
        "bilateral",
        "gaussian_filter",
        "biharmonic",
        "telea",
        "navier_stokes",
        "bicubic",
        "bicubic_opencv",
        "lanczos",
        "nlm_blind",
    } <= set(METHODS)
    with pytest.raises(KeyError, match="known: bicubic, bicubic_opencv, biharmonic"):
        get_method("bm4d")
    assert get_method("benchmark.methods.classical:median").function is METHODS["median"].function
    with pytest.raises(KeyError, match="cannot import"):
        get_method("nosuchpackage.mod:fn")


def test_bad_input_gives_clear_errors(crop: np.ndarray) -> None:
    noisy = deg.gaussian(crop, 25, np.random.default_rng(0)).observation
    broken = deg.Observation(noisy.y * np.nan, noisy.physics, noisy.params)
    with pytest.raises(ValueError, match="NaN"):
        restore("nlm", broken)
    flat = deg.Observation(noisy.y[..., 0], noisy.physics, noisy.params)
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        restore("tv", flat)
    bright = deg.Observation(noisy.y + 2, noisy.physics, noisy.params)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        restore("median", bright)
    with pytest.raises(ValueError, match="solves inpainting, not denoising"):
        restore("telea", noisy)
    with pytest.raises(TypeError, match="physics is the forward model that made y"):
        deg.Observation(noisy.y, "inpainting", {})  # type: ignore[arg-type]
    if crop.shape[2] == 1:
        with pytest.raises(ValueError, match="needs a color image"):
            restore("cbm3d", noisy)
