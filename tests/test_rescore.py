"""Metrics as a registry: a metric added after a run is computed from the cells' saved outputs
(``dipbench rescore``), exactly, in seconds, and recomputes no cell."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.grid import Cell
from benchmark.methods import restore
from benchmark.metrics import get_protocol, psnr
from benchmark.observation import prepare
from benchmark.runfolder import OUTPUTS_SUFFIX, Record
from benchmark.scoring import BUILT_IN, METRICS, Metric, get_metric, register_metric, score

# A user's metric module, as a researcher writes it: one registered, one a bare function.
USER_METRICS = """
import numpy as np
from benchmark.metrics import psnr
from benchmark.scoring import Metric, register_metric


def psnr_again(output, reference):
    return psnr(output, reference)


def mean_absolute_error(output, reference):
    return float(np.mean(np.abs(output - reference)))


register_metric(Metric("mae", mean_absolute_error, "mean absolute error", higher_is_better=False))
"""

SUITE = """
name = "metrics-recipe"
title = "A suite rescored later"
task = "inpainting"
protocol = "gray"
datasets = "bm3d_gray11"
images = ["house", "peppers"]
crop = 64

[[degradations]]
kind = "bernoulli"
levels = [0.5]

[methods.telea]
[methods.biharmonic]
"""


@pytest.fixture
def run_folder(tmp_path: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A finished run of two classical methods on two images, in a user's working folder
    that holds their metric module."""
    (tmp_path / "my_metrics.py").write_text(USER_METRICS)
    (tmp_path / "suite.toml").write_text(textwrap.dedent(SUITE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    assert main(["run", "suite.toml", "--out", str(out), "-q"]) == 0
    yield out
    sys.modules.pop("my_metrics", None)
    METRICS.pop("mae", None)


MAE = "my_metrics:mean_absolute_error"


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def _cell_files(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*") if p.is_file()}


def test_rescore_adds_a_metric_equal_to_computing_it_on_the_outputs(run_folder: Path) -> None:
    out = run_folder
    added = ["my_metrics:psnr_again", "my_metrics:mean_absolute_error"]  # registered as "mae"
    assert main(["rescore", str(out), "--metrics", *added, "-q"]) == 0
    table = pd.read_csv(out / "results.csv")
    at = list(table.columns).index("psnr")
    assert list(table.columns[at : at + 4]) == ["psnr", "ssim", "my_metrics:psnr_again", "mae"]
    # lossless outputs: PSNR recomputed from them is the cell's own, to the last bit
    assert (table["my_metrics:psnr_again"] == table.psnr).all()
    for record in map(Record.read, sorted((out / "cells").glob("*.json"))):
        cell = Cell(**{**record.cell, "outputs": tuple(record.cell["outputs"])})
        observation, target = prepare(cell)
        direct = restore(cell.method, observation, seed=cell.method_seed)  # the method again
        as_scored = np.clip(direct, 0, 1).astype(np.float64)  # the protocol scores in float64
        expected = float(np.mean(np.abs(as_scored - target.astype(np.float64))))
        assert record.rows[0]["mae"] == expected
        assert set(record.metrics) == {"my_metrics:psnr_again", "mae"}
        assert record.metrics["mae"]["file"] == "my_metrics.py"
    text = (out / "table.md").read_text()
    assert "## bernoulli 0.5: MAE (lower is better)" in text
    assert "## bernoulli 0.5: MY_METRICS:PSNR_AGAIN" in text


def test_a_metric_added_later_recomputes_no_cell(run_folder: Path) -> None:
    out = run_folder
    assert main(["rescore", str(out), "--metrics", MAE, "-q"]) == 0
    before = _cell_files(out)
    assert main(["rescore", str(out), "--metrics", MAE, "-q"]) == 0  # already current
    assert _cell_files(out) == before
    assert main(["run", "suite.toml", "--out", str(out), "-q"]) == 0  # the records stand
    assert _cell_files(out) == before
    assert "mae" in pd.read_csv(out / "results.csv").columns


def test_rescore_refuses_what_it_cannot_do(
    run_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_folder
    # built in: every cell has it
    assert "computed with every cell" in _usage_error(
        ["rescore", str(out), "--metrics", "psnr"], capsys
    )
    error = _usage_error(["rescore", str(out), "--metrics", "nope"], capsys)
    assert "unknown metric 'nope'; known: psnr, ssim" in error
    assert "not a run folder" in _usage_error(
        ["rescore", str(out.parent), "--metrics", MAE], capsys
    )
    # a cell whose saved outputs were replaced is named and left alone
    saved = sorted((out / "cells").glob(f"*{OUTPUTS_SUFFIX}"))[0]
    with np.load(saved) as arrays:
        damaged = {name: arrays[name] * 0.5 for name in arrays.files}
    with saved.open("wb") as handle:
        np.savez_compressed(handle, **damaged)
    assert main(["rescore", str(out), "--metrics", MAE, "-q"]) == 1
    assert "not the files its run wrote" in capsys.readouterr().err
    assert pd.read_csv(out / "results.csv").mae.isna().sum() == 1


def test_the_registry_scores_under_the_protocol_as_cells_are_scored() -> None:
    rng = np.random.default_rng(0)
    reference = rng.random((37, 41, 3))
    output = np.clip(reference + rng.normal(0, 0.1, reference.shape), -0.2, 1.2)
    protocol = get_protocol("rgb")
    assert score(protocol, output, reference) == protocol.score(output, reference)
    register_metric(Metric("psnr_test_copy", psnr, digits=2))
    try:
        values = score(protocol, output, reference, ["psnr", "psnr_test_copy"])
        assert values["psnr_test_copy"] == values["psnr"]  # clipped as the built-in is
    finally:
        METRICS.pop("psnr_test_copy")
    with pytest.raises(ValueError, match="built in"):
        register_metric(Metric("psnr", psnr))
    with pytest.raises(ValueError, match="plain name"):
        register_metric(Metric("my metric", psnr))
    assert tuple(BUILT_IN) == ("psnr", "ssim")
    assert get_metric("lpips").higher_is_better is False  # declared without importing lpips


def test_lpips_says_in_one_line_how_to_get_it() -> None:
    pytest.importorskip("torch")
    try:
        import lpips  # noqa: F401
    except ImportError:
        metric = get_metric("lpips")
        with pytest.raises(RuntimeError, match=r"pip install 'dipbench\[lpips\]'"):
            metric.compute(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)))
    else:
        pytest.skip("lpips is installed here: its weights download is tested where it is not")
