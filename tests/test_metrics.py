"""PSNR, SSIM and the evaluation protocols, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from benchmark.metrics import PROTOCOLS, get_protocol, luma_bt601, psnr, ssim


def test_psnr_hand_computed() -> None:
    ref = np.zeros((9, 7, 1), np.float32)
    assert psnr(ref + 0.1, ref) == pytest.approx(20.0)  # MSE 0.01
    half = ref.copy()
    half[:, :3] = 0.5  # 27 of 63 pixels off by 0.5: MSE = 0.25 * 27 / 63
    assert psnr(half, ref) == pytest.approx(-10 * np.log10(0.25 * 27 / 63))
    assert psnr(ref, ref) == float("inf")


def test_psnr_clips_the_output_and_uses_float64() -> None:
    ref = np.ones((5, 5, 3), np.float32)
    assert psnr(ref + 3.0, ref) == float("inf")  # clipped to 1
    ref = np.full((64, 64, 1), 0.5, np.float32)
    out = ref + np.float32(1e-4)
    exact = (out.astype(np.float64) - 0.5) ** 2
    assert psnr(out, ref) == pytest.approx(-10 * np.log10(exact.mean()), abs=1e-9)


def test_ssim_matches_the_gaussian_window_definition() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random((33, 35, 3)).astype(np.float32)
    out = np.clip(ref + rng.normal(0, 0.1, ref.shape), 0, 1).astype(np.float32)
    expected = structural_similarity(
        ref.astype(np.float64),
        out.astype(np.float64),
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=-1,
    )
    assert ssim(out, ref) == pytest.approx(expected)
    assert ssim(ref, ref) == pytest.approx(1.0)
    assert ssim(out[..., :1], ref[..., :1]) < 1.0


def test_luma_bt601_range() -> None:
    rgb = np.array([[[0, 0, 0], [1, 1, 1], [1, 0, 0]]], np.float32)
    y = luma_bt601(rgb)[0, :, 0] * 255
    np.testing.assert_allclose(y, [16, 235, 16 + 65.481], atol=1e-6)
    gray = np.array([[[0.5]]], np.float32)
    assert luma_bt601(gray)[0, 0, 0] * 255 == pytest.approx(16 + 219 * 0.5)


def test_sr_y_crops_centered_to_32_and_drops_the_eval_scripts_border() -> None:
    ref = np.full((70, 70, 3), 0.5, np.float32)
    out = ref.copy()
    # 70 -> 64 keeps rows/cols 3..66; the border drops 4 at the top/left and 5 at the
    # bottom/right (DIP's script, 1-based `shave+1 : end-shave`): rows 7..61 are scored.
    out[:7] = 0.0
    out[62:] = 1.0
    out[:, :7] = 0.0
    out[:, 62:] = 1.0
    assert get_protocol("sr-y").score(out, ref)["psnr"] == float("inf")
    out[61, 61] = 0.6  # one scored pixel off by 0.1 in gray: 0.1 * 219/255 in Y
    mse = (0.1 * 219 / 255) ** 2 / 55**2
    assert get_protocol("sr-y").score(out, ref)["psnr"] == pytest.approx(-10 * np.log10(mse))


def test_channel_protocols_check_channels_and_shapes() -> None:
    gray = np.zeros((16, 16, 1), np.float32)
    assert get_protocol("gray").score(gray, gray)["ssim"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(gray[:8], gray[:8])
    with pytest.raises(ValueError, match="3-channel"):
        get_protocol("rgb").score(gray, gray)
    with pytest.raises(ValueError, match="differs"):
        psnr(gray, np.zeros((16, 9, 1), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        psnr(gray * np.nan, gray)
    with pytest.raises(KeyError, match="known: gray, rgb, sr-y"):
        get_protocol("y")
    assert set(PROTOCOLS) == {"gray", "rgb", "sr-y"}
