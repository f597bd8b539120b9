"""CBM3D reproduces the DIP paper's color denoising baseline (sigma = 25, 9 images)."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from benchmark.degradations import gaussian
from benchmark.images import load_image, load_registry
from benchmark.methods import restore
from benchmark.metrics import psnr

PAPER_CBM3D_MEAN = 31.42  # DIP (CVPR 2018), Sec. 4, CBM3D mean over the 9 color images


@pytest.mark.slow
def test_cbm3d_mean_within_0p3_db_of_the_paper(mirror: object) -> None:
    names = [e.name for e in load_registry() if e.set == "cbm3d_color9"]
    scores = {}
    for name in names:
        clean = load_image("cbm3d_color9", name)
        degraded = gaussian(clean, 25, np.random.default_rng(zlib.crc32(name.encode())))
        scores[name] = psnr(restore("cbm3d", degraded.observation), clean)
    table = pd.Series(scores)
    assert len(table) == 9
    assert abs(table.mean() - PAPER_CBM3D_MEAN) <= 0.3, table.round(2).to_dict()
