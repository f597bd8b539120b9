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
            "--allow-subset",  # extra.png has no ground truth
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


# --- files that need care: bit depth, channels, names, broken files -------------------------


def _score(tmp_path: Path, protocol: str, *extra: str) -> int:
    argv = ["score", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred")]
    return main([*argv, "--protocol", protocol, *extra])


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """gt/a.png (8-bit RGB, 40x36) and an empty pred folder."""
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    gt = np.round(np.random.default_rng(1).random((40, 36, 3)) * 255) / 255
    _save(tmp_path / "gt" / "a.png", gt)
    return tmp_path / "gt", tmp_path / "pred", gt


def _psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(gt, np.clip(pred, 0, 1), data_range=1.0))


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_predictions_are_scaled_by_their_own_depth(
    folders: tuple[Path, Path, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    channels: int,
) -> None:
    import cv2

    gt_dir, pred_dir, gt = folders
    if channels == 1:
        gt = gt[..., :1]
        _save(gt_dir / "a.png", gt)
    noisy = np.clip(gt + np.random.default_rng(2).normal(0, 0.03, gt.shape), 0, 1)
    sixteen = np.round(noisy * 65535).astype(np.uint16)
    cv2.imwrite(str(pred_dir / "a.png"), sixteen[..., ::-1] if channels == 3 else sixteen[..., 0])
    assert (
        _score(tmp_path, "rgb" if channels == 3 else "gray", "--out", str(tmp_path / "s.csv")) == 0
    )
    table = pd.read_csv(tmp_path / "s.csv")
    assert table.psnr[0] == pytest.approx(_psnr(sixteen / 65535.0, gt), abs=1e-6)
    assert "16-bit, scaled by 1/65535" in capsys.readouterr().out


def test_float_tiff_in_range_is_scored_and_out_of_range_is_refused(
    folders: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    gt_dir, pred_dir, gt = folders
    gray = gt[..., :1]
    _save(gt_dir / "a.png", gray)
    Image.fromarray(gray[..., 0].astype(np.float32)).save(pred_dir / "a.tiff")
    assert _score(tmp_path, "gray") == 0
    Image.fromarray((gray[..., 0] * 255).astype(np.float32)).save(pred_dir / "a.tiff")
    assert _score(tmp_path, "gray") == 1
    assert "values outside [0, 1]" in capsys.readouterr().err


def test_alpha_is_dropped_only_when_opaque_and_said(
    folders: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    gt_dir, pred_dir, gt = folders
    rgba = np.concatenate([np.round(gt * 255), np.full(gt.shape[:2] + (1,), 255)], axis=2)
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(pred_dir / "a.png")
    assert _score(tmp_path, "rgb") == 0
    assert "opaque alpha channel dropped" in capsys.readouterr().out
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(pred_dir / "a.png")
    assert _score(tmp_path, "rgb") == 1
    assert "has transparency" in capsys.readouterr().err


def test_channels_are_converted_only_where_nothing_is_lost(
    folders: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    gt_dir, pred_dir, gt = folders
    _save(pred_dir / "a.png", gt[..., :1])  # gray prediction, RGB ground truth
    assert _score(tmp_path, "rgb") == 1
    assert "the prediction is gray, the rgb protocol scores RGB" in capsys.readouterr().err
    assert _score(tmp_path, "gray") == 1  # the ground truth is RGB with different channels
    assert "the ground truth is RGB, the gray protocol" in capsys.readouterr().err
    assert _score(tmp_path, "sr-y") == 1  # is a gray prediction a luma already? not guessed
    assert "sr-y takes the luma of two images of one kind" in capsys.readouterr().err
    gray_gt = gt[..., :1]
    _save(gt_dir / "a.png", gray_gt)
    _save(pred_dir / "a.png", np.repeat(gray_gt, 3, axis=2))  # gray saved as RGB
    assert _score(tmp_path, "gray") == 0
    assert "RGB with R = G = B, read as gray" in capsys.readouterr().out


def test_two_files_with_one_name_are_not_scored(
    folders: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    gt_dir, pred_dir, gt = folders
    _save(pred_dir / "a.png", gt)
    _save(pred_dir / "a.bmp", gt * 0.5)
    assert _score(tmp_path, "rgb") == 1
    assert "a: 2 files in --pred (a.bmp, a.png)" in capsys.readouterr().err


def test_each_bad_file_is_named_and_the_good_ones_are_scored(
    folders: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    gt_dir, pred_dir, gt = folders
    _save(pred_dir / "a.png", gt)  # the good one
    bad = {
        "size": (lambda p: _save(p, gt[:20]), "differs from reference"),
        "tiny": (lambda p: _save(p, gt[:1, :1]), "differs from reference"),
        "text": (lambda p: p.write_text("not an image"), "not a readable image"),
        "cut": (lambda p: p.write_bytes((gt_dir / "a.png").read_bytes()[:300]), "not a readable"),
    }
    for name, (make, _) in bad.items():
        _save(gt_dir / f"{name}.png", gt)
        make(pred_dir / f"{name}.png")
    _save(gt_dir / "dot.png", gt[:1, :1])
    _save(pred_dir / "dot.png", gt[:1, :1])
    out = tmp_path / "s.csv"
    assert _score(tmp_path, "rgb", "--out", str(out)) == 1
    err = capsys.readouterr().err
    for name, (_, message) in bad.items():
        assert any(
            line.startswith(f"not scored: {name}: ") and message in line
            for line in err.splitlines()
        ), (name, err)
    assert "not scored: dot: SSIM needs images at least 11x11" in err
    assert "Traceback" not in err
    assert list(pd.read_csv(out).image) == ["a"]


def test_a_missing_out_folder_is_refused_before_scoring(
    folders: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _, pred_dir, gt = folders
    _save(pred_dir / "a.png", gt)
    with pytest.raises(SystemExit) as exc:
        _score(tmp_path, "rgb", "--out", str(tmp_path / "nowhere" / "s.csv"))
    assert exc.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_fuzz_score_never_tracebacks_and_leaves_no_partial_output(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A few hundred generated bad predictions: random bytes, cut files, odd shapes and sample
    types. Every run exits 1 (or 2), says why, and writes no output file."""
    import cv2

    rng = np.random.default_rng(123)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    gt = np.round(rng.random((24, 20, 3)) * 255) / 255
    _save(gt_dir / "x.png", gt)
    good = (gt_dir / "x.png").read_bytes()
    makers = [
        lambda p: p.write_bytes(rng.bytes(int(rng.integers(0, 400)))),
        lambda p: p.write_bytes(good[: int(rng.integers(0, len(good) - 1))]),
        lambda p: cv2.imwrite(
            str(p),
            rng.integers(0, 255, (int(rng.integers(1, 30)), int(rng.integers(1, 30)), 3)).astype(
                np.uint8
            ),
        ),
        lambda p: Image.fromarray((rng.random((24, 20)) * 9).astype(np.float32)).save(
            p.with_suffix(".tiff")
        ),
        lambda p: cv2.imwrite(str(p), rng.integers(0, 255, (24, 20, 4)).astype(np.uint8)),
        lambda p: (
            cv2.imwrite(str(p), np.zeros((24, 20, 3), np.uint8))
            and p.with_suffix(".bmp").write_bytes(p.read_bytes())
        ),
    ]
    codes = []
    for trial in range(240):
        if pred_dir.exists():
            for f in pred_dir.iterdir():
                f.unlink()
        pred_dir.mkdir(exist_ok=True)
        makers[trial % len(makers)](pred_dir / "x.png")
        out = tmp_path / f"out{trial}.csv"
        try:
            code = _score(tmp_path, "rgb", "--out", str(out))
        except SystemExit as exc:
            code = int(exc.code or 0)
        codes.append(code)
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        if code != 0:
            assert code in (1, 2) and captured.err.strip(), trial
            assert not out.exists(), trial
    assert codes.count(0) < len(codes)  # the generator does make bad files


def test_a_ground_truth_without_its_prediction_fails_unless_a_subset_is_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for name in ("a", "b", "c"):
        _save(tmp_path / "gt" / f"{name}.png", rng.random((16, 16, 1)))
    _save(tmp_path / "pred" / "a.png", rng.random((16, 16, 1)))
    argv = ["score", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred")]
    argv += ["--protocol", "gray"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "not matched (in one folder only): b, c" in err
    assert "the mean is over the 1 scored only" in err
    assert main([*argv, "--allow-subset"]) == 0
