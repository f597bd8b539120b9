"""The classical rows of DIP's tables, computed as the authors computed them.

Against the published means and the PSNR of the authors' released result images (our
protocol, ``benchmark/data/paper_numbers.csv``): CBM3D and NLM on the 9 color images at
sigma 25, MATLAB-style bicubic on Set5/Set14 x4.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
from skimage.color import rgb2ycbcr, ycbcr2rgb

from benchmark.arrays import to_uint8
from benchmark.degradations import downsample_bicubic, gaussian
from benchmark.forward import imresize
from benchmark.images import load_image, load_registry
from benchmark.methods import restore
from benchmark.metrics import get_protocol, psnr
from benchmark.report import PAPER_NUMBERS

PAPER_CBM3D_MEAN = 31.42  # DIP (CVPR 2018), Sec. 4, CBM3D mean over the 9 color images


def _released(method: str, dataset: str) -> pd.Series:
    """PSNR of the authors' released outputs of ``method``, by image."""
    numbers = pd.read_csv(PAPER_NUMBERS)
    rows = numbers[
        (numbers.method == method)
        & (numbers.kind == "released-outputs")
        & (numbers.dataset == dataset)
    ]
    return rows.set_index("image").psnr


def _denoised_psnr(method: str, name: str) -> float:
    clean = load_image("cbm3d_color9", name)
    degraded = gaussian(clean, 25, np.random.default_rng(zlib.crc32(name.encode())))
    return psnr(restore(method, degraded.observation), clean)


@pytest.mark.slow(seconds=300)
def test_cbm3d_mean_within_0p3_db_of_the_paper(mirror: object) -> None:
    names = [e.name for e in load_registry() if e.set == "cbm3d_color9"]
    table = pd.Series({name: _denoised_psnr("cbm3d", name) for name in names})
    assert len(table) == 9
    assert abs(table.mean() - PAPER_CBM3D_MEAN) <= 0.3, table.round(2).to_dict()


@pytest.mark.slow(seconds=6)
@pytest.mark.parametrize("name", ["baboon", "house", "f16"])
def test_nlm_reproduces_the_released_outputs_within_0p5_db(name: str, mirror: object) -> None:
    # Baboon is the hardest: scikit-image's fast mode loses 1.8 dB there, h = 0.6 or 1.0 sigma
    # 0.6 to 1.0 dB, so a change of mode or of h crosses the bound.
    released = _released("nlm", "cbm3d_color9")[name]
    assert _denoised_psnr("nlm", name) == pytest.approx(released, abs=0.5)


def _bicubic_sr_y(dataset: str, name: str) -> float:
    degraded = downsample_bicubic(load_image(dataset, name), 4)
    out = restore("bicubic", degraded.observation)
    return get_protocol("sr-y").score(out, degraded.target)["psnr"]


def test_bicubic_reproduces_the_released_set5_x4_outputs_within_0p05_db(mirror: object) -> None:
    released = _released("bicubic", "set5")
    ours = pd.Series({name: _bicubic_sr_y("set5_x4_gt", name) for name in released.index})
    assert (ours - released).abs().max() <= 0.05, (ours - released).round(3).to_dict()
    assert ours.mean() == pytest.approx(28.43, abs=0.05)  # the paper's Set5 x4 bicubic


@pytest.mark.slow(seconds=2)
def test_bicubic_set14_x4_mean_and_images_within_0p05_db(mirror: object) -> None:
    released = _released("bicubic", "set14")
    ours = pd.Series({name: _bicubic_sr_y("set14_x4_gt", name) for name in released.index})
    assert ours.mean() == pytest.approx(26.05, abs=0.05)  # the paper's Set14 x4 bicubic
    gaps = (ours - released).drop("ppt3")
    assert gaps.abs().max() <= 0.05, gaps.round(3).to_dict()
    # ppt3, a slide of saturated colors, is 0.10 dB under: see the next test.
    assert -0.15 <= ours["ppt3"] - released["ppt3"] <= 0.0


def test_ppt3_gap_is_the_color_space_of_lapsrns_low_resolution_image(mirror: object) -> None:
    """LapSRN resized in 8-bit YCbCr; that LR leaves the RGB gamut on ppt3 (values to 1.09), which
    an RGB observation in [0, 1] cannot carry. Resizing in YCbCr, as LapSRN did, closes the gap,
    so the kernel is right and the residual is the input's color space."""
    gt = load_image("set14_x4_gt", "ppt3")

    def eight_bit(image: np.ndarray) -> np.ndarray:
        return to_uint8(image).astype(np.float64) / 255

    ycbcr = eight_bit(rgb2ycbcr(gt) / 255)
    up = eight_bit(imresize(eight_bit(imresize(ycbcr, 0.25)), 4.0))
    out = np.clip(ycbcr2rgb(up * 255), 0, 1)
    score = get_protocol("sr-y").score(out, gt)["psnr"]
    assert score == pytest.approx(_released("bicubic", "set14")["ppt3"], abs=0.02)
