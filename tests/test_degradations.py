"""Degradation statistics and determinism (the forward models: tests/test_forward.py)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark import degradations as deg

# Flat mid-gray, odd size: clipping is negligible so the noise statistics are exact.
FLAT = np.full((61, 47, 3), 0.5, np.float32)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _sampling_tolerance(std: float, n: int, k: float = 5.0) -> float:
    return k * std / np.sqrt(n)


@pytest.mark.parametrize("sigma", [5, 25])
def test_gaussian_noise_has_the_declared_std(sigma: float) -> None:
    d = deg.gaussian(FLAT, sigma, _rng())
    noise = d.observation.y - FLAT
    std = sigma / 255
    assert abs(noise.mean()) < _sampling_tolerance(std, noise.size)
    assert abs(noise.std() - std) < 5 * std / np.sqrt(2 * noise.size)
    assert d.observation.params == {"kind": "gaussian", "level": sigma, "sigma": std, "clip": True}
    assert d.observation.task == "denoising"
    np.testing.assert_array_equal(d.target, FLAT)


def test_gaussian_clip_switch() -> None:
    near_one = np.full((40, 40, 1), 0.99, np.float32)
    assert deg.gaussian(near_one, 50, _rng()).observation.y.max() <= 1.0
    assert deg.gaussian(near_one, 50, _rng(), clip=False).observation.y.max() > 1.0


@pytest.mark.parametrize("c", [60, 5])
def test_poisson_noise_mean_and_variance(c: float) -> None:
    x = np.full((101, 99, 1), 0.3, np.float32)  # far from the clip
    y = deg.poisson(x, c, _rng()).observation.y
    var = 0.3 / c
    assert abs(y.mean() - 0.3) < _sampling_tolerance(np.sqrt(var), y.size)
    assert abs(y.var() - var) / var < 0.05
    # The observations are multiples of 1/c: counts.
    np.testing.assert_allclose(y * c, np.round(y * c), atol=1e-4)


@pytest.mark.parametrize(("amount", "svp"), [(0.06, 0.5), (0.17, 0.8)])
def test_salt_and_pepper_fraction_and_ratio(amount: float, svp: float) -> None:
    y = deg.salt_pepper(FLAT, amount, _rng(), salt_vs_pepper=svp).observation.y
    salt, pepper = (y == 1).mean(), (y == 0).mean()
    n = y.size
    assert abs(salt + pepper - amount) < _sampling_tolerance(np.sqrt(amount), n)
    assert abs(salt / (salt + pepper) - svp) < 0.03
    assert ((y == 0.5) | (y == 0) | (y == 1)).all()


@pytest.mark.parametrize("c", [0.15, 0.35])
def test_speckle_is_multiplicative(c: float) -> None:
    x = np.full((90, 91, 1), 0.25, np.float32)
    y = deg.speckle(x, c, _rng()).observation.y
    noise = y - x
    assert abs(noise.mean()) < _sampling_tolerance(0.25 * c, y.size)
    assert abs(noise.std() - 0.25 * c) / (0.25 * c) < 0.03
    zero = np.zeros((10, 10, 1), np.float32)
    assert not deg.speckle(zero, c, _rng()).observation.y.any()  # no signal, no noise


@pytest.mark.parametrize(
    "kind", ["gaussian", "poisson", "salt_pepper", "speckle", "bernoulli", "text", "regions"]
)
def test_same_seed_same_output_other_seed_other_output(kind: str) -> None:
    level = {
        "gaussian": 25,
        "poisson": 12,
        "salt_pepper": 0.09,
        "speckle": 0.35,
        "bernoulli": 0.5,
        "text": 0.5,
        "regions": 0.2,
    }[kind]
    image = _rng(9).random((37, 31, 3)).astype(np.float32)
    a = deg.degrade(image, kind, level, _rng(1)).observation
    b = deg.degrade(image, kind, level, _rng(1)).observation
    c = deg.degrade(image, kind, level, _rng(2)).observation
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.y, c.y)
    assert a.y.dtype == np.float32 and a.y.shape == image.shape


def test_imagenet_c_levels() -> None:
    assert deg.imagenet_c_level("gaussian", 3) == pytest.approx(0.18 * 255)
    assert [deg.imagenet_c_level("poisson", s) for s in (2, 3, 4)] == [25, 12, 5]
    assert deg.imagenet_c_level("salt_pepper", 4) == 0.17
    assert deg.imagenet_c_level("speckle", 2) == 0.2
    with pytest.raises(ValueError, match="1..5"):
        deg.imagenet_c_level("speckle", 6)
    with pytest.raises(KeyError, match="known: gaussian"):
        deg.imagenet_c_level("fog", 1)


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_bernoulli_mask_removes_the_fraction_in_every_channel(fraction: float) -> None:
    image = _rng(3).random((64, 65, 3)).astype(np.float32) * 0.9 + 0.05
    obs = deg.bernoulli(image, fraction, _rng()).observation
    assert obs.mask is not None and obs.mask.shape == (64, 65, 1)
    n = obs.mask.size
    assert abs((1 - obs.mask.mean()) - fraction) < _sampling_tolerance(0.5, n)
    missing = obs.mask[..., 0] == 0
    assert (obs.y[missing] == 0).all()  # every channel of a removed pixel
    np.testing.assert_array_equal(obs.y[~missing], image[~missing])
    assert obs.params["missing_fraction"] == pytest.approx(1 - obs.mask.mean())


def test_text_mask_covers_lines_of_text() -> None:
    mask = deg.text_mask((128, 160), 0.6, _rng())
    missing = 1 - mask.mean()
    assert 0.05 < missing < 0.4
    rows_hit = (mask[..., 0] == 0).any(axis=1).mean()
    assert rows_hit > 0.4  # spread over the image, not one blob


def test_regions_mask_reaches_its_fraction_in_blocks() -> None:
    mask = deg.regions_mask((96, 128), 0.25, _rng())
    assert 0.25 <= 1 - mask.mean() < 0.25 + (12 * 12) / (96 * 128) + 1e-9
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        deg.regions_mask((8, 8), 1.0, _rng())


def test_downsample_crops_to_the_factor_and_uses_pillow_lanczos() -> None:
    image = _rng(4).random((37, 31, 3)).astype(np.float32)
    d = deg.downsample(image, 4)
    assert d.target.shape == (36, 28, 3)  # centered crop to a multiple of 4
    np.testing.assert_array_equal(d.target, image[0:36, 1:29])
    assert d.observation.y.shape == (9, 7, 3) and d.observation.factor == 4
    assert d.observation.output_shape == d.target.shape
    flat = deg.downsample(np.full((64, 64, 1), 0.4, np.float32), 8, multiple=32)
    np.testing.assert_allclose(flat.observation.y, np.round(0.4 * 255) / 255, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        deg.downsample(image, 3, multiple=32)


def test_unknown_degradation_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: gaussian, poisson"):
        deg.degrade(FLAT, "blur", 1, _rng())


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8), np.float32), "shape"),
        (np.full((8, 8, 1), 2.0, np.float32), r"\[0, 1\]"),
        (np.zeros((8, 8, 3), np.uint8), "floating point"),
    ],
)
def test_bad_input_is_a_clear_error(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deg.gaussian(bad, 25, _rng())
