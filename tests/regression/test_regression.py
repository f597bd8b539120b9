"""The PSNR regression check: the `ci` grid of every suite against the committed expected values.

`make update-expected` re-measures the grid and rewrites ``expected_ci.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.suites import SUITES_DIR

EXPECTED = Path(__file__).with_name("expected_ci.csv")


@pytest.fixture(scope="module")
def ci_results(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    out = tmp_path_factory.mktemp("ci")
    # The CIFAR-10 suite is skipped where its archive cannot be had: exit 0 either way.
    assert main(["reproduce", "--profile", "ci", "--out", str(out), "-q"]) == 0
    return out


def test_ci_grid_matches_the_expected_psnrs(
    ci_results: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["check", str(ci_results), "--expected", str(EXPECTED)])
    out, err = capsys.readouterr()
    print(out, err)  # the whole table in the test log
    assert code == 0, err
    assert "regression" not in out.split("check:")[-1]


def test_halving_dip_iterations_is_caught(
    tmp_path: Path, mirror: Path, capsys: pytest.CaptureFixture
) -> None:
    """A deliberate mutation: DIP with half its `ci` iterations must fail the check."""
    suite = (SUITES_DIR / "inpainting-table1.toml").read_text()
    ci_fit = "fit = { iterations = 200, lr = 0.01 }"
    assert ci_fit in suite
    mutated = tmp_path / "inpainting-table1.toml"
    mutated.write_text(suite.replace(ci_fit, "fit = { iterations = 100, lr = 0.01 }"))
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                str(mutated),
                "--profile",
                "ci",
                "--methods",
                "dip",
                "--out",
                str(out),
                "-q",
                "--no-report",
            ]
        )
        == 0
    )
    expected = pd.read_csv(EXPECTED)
    mine = expected[(expected.suite == "inpainting-table1") & (expected.method == "dip")]
    assert len(mine) >= 4
    subset = tmp_path / "expected.csv"
    mine.to_csv(subset, index=False)
    capsys.readouterr()
    assert main(["check", str(out / "results.csv"), "--expected", str(subset)]) == 1
    err = capsys.readouterr().err
    assert "regressed or missing" in err and "inpainting-table1 bm3d_gray11/" in err
    assert "dip/last: regression" in err or "dip/ema: regression" in err
