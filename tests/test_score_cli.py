"""``dipbench score``: restored images made elsewhere, matched by file name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.arrays import to_uint8
from benchmark.cli import main
from benchmark.metrics import get_protocol


def _save(path: Path, image: np.ndarray) -> None:
    pixels = to_uint8(image)
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(path)


def test_score_prints_per_image_and_mean_and_writes_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rng = np.random.default_rng(0)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    expected = []
    for name, shape in [("a", (70, 66, 3)), ("b", (64, 96, 3))]:
        gt = np.round(rng.random(shape) * 255) / 255
        pred = np.round(np.clip(gt + rng.normal(0, 0.05, shape), 0, 1) * 255) / 255
        _save(gt_dir / f"{name}.png", gt)
        _save(pred_dir / f"{name}.bmp", pred)  # another extension: matched by name
        expected.append(get_protocol("sr-y").score(pred.astype(np.float32), gt.astype(np.float32)))
    _save(pred_dir / "extra.png", np.zeros((8, 8, 1)))

    out_csv = tmp_path / "scores.csv"
    code = main(
        [
            "score",
            "--gt",
            str(gt_dir),
            "--pred",
            str(pred_dir),
            "--protocol",
            "sr-y",
            "--out",
            str(out_csv),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "extra" in captured.err
    mean_psnr = np.mean([e["psnr"] for e in expected])
    assert f"{mean_psnr:.4f}" in captured.out and "mean" in captured.out
    table = pd.read_csv(out_csv)
    assert list(table.image) == ["a", "b"]
    np.testing.assert_allclose(table.psnr, [e["psnr"] for e in expected], rtol=1e-9)


def test_score_without_common_names_fails(tmp_path: Path) -> None:
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    _save(tmp_path / "gt" / "x.png", np.zeros((16, 16, 1)))
    argv = [
        "score",
        "--gt",
        str(tmp_path / "gt"),
        "--pred",
        str(tmp_path / "pred"),
        "--protocol",
        "gray",
    ]
    assert main(argv) == 1


def test_score_bad_protocol_or_folder_exits_2(tmp_path: Path) -> None:
    for argv in (
        ["score", "--gt", str(tmp_path), "--pred", str(tmp_path), "--protocol", "ycbcr"],
        ["score", "--gt", str(tmp_path / "nope"), "--pred", str(tmp_path), "--protocol", "rgb"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
