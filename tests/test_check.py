"""The regression check's arithmetic: tolerances from measured spread, gating, verdicts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import check, expect
from benchmark.cli import main
from benchmark.suites import load_suite


def _results(values: dict[tuple[str, str, str], float], status: str = "ok") -> pd.DataFrame:
    """results.csv rows: {(image, method, output): psnr}, one suite, one degradation."""
    return pd.DataFrame(
        [
            {
                "suite": "s",
                "profile": "ci",
                "dataset": "d",
                "image": image,
                "degradation": "gaussian",
                "level": 25,
                "method": method,
                "output": output,
                "psnr": psnr,
                "status": status,
            }
            for (image, method, output), psnr in values.items()
        ]
    )


REFERENCE = {
    ("a", "dip", "last"): 30.0,
    ("b", "dip", "last"): 28.0,
    ("a", "tv", "out"): 25.0,
    ("b", "tv", "out"): 24.0,
}


def _variant(dip_a: float, dip_b: float) -> pd.DataFrame:
    return _results({**REFERENCE, ("a", "dip", "last"): dip_a, ("b", "dip", "last"): dip_b})


def _expected() -> pd.DataFrame:
    variants = {
        "seed-1": _variant(30.2, 27.9),
        "seed-2": _variant(29.9, 28.4),
        "seed-3": _variant(33.0, 28.0),
        "avx2": _variant(30.0, 28.0),  # a kernel change that moves nothing
    }
    return check.derive_expected(_results(REFERENCE), variants, {"x": "1"})


def _row(table: pd.DataFrame, statistic: str, image: str, method: str) -> pd.Series:
    mine = table[(table.statistic == statistic) & (table.image == image) & (table.method == method)]
    assert len(mine) == 1
    return mine.iloc[0]


def test_tolerance_is_a_multiple_of_the_rms_deviation_with_a_floor() -> None:
    table = _expected()
    b = _row(table, "cell", "b", "dip")
    rms_b = np.sqrt((0.1**2 + 0.4**2 + 0.0**2) / 3)  # the seeds; the kernel run does not dilute
    assert b.rms_seeds == pytest.approx(rms_b, abs=1e-4) and b.rms_kernels == 0
    assert b.spread == b.rms_seeds
    assert b.tolerance == pytest.approx(check.SPREAD_MULTIPLE * rms_b, abs=1e-3)
    assert bool(b.gated) == (b.tolerance <= check.GATE_LIMIT["cell"])
    # A chaotic cell (3 dB off in one variant) is reported, not gated.
    a = _row(table, "cell", "a", "dip")
    assert a.max_deviation == pytest.approx(3.0) and not a.gated
    # Deterministic methods: no deviation, the floor.
    tv = _row(table, "cell", "a", "tv")
    assert tv.tolerance == check.TOLERANCE_FLOOR and tv.gated
    # The suite mean of dip/last averages the two cells and has its own spread.
    mean = _row(table, "mean", check.ALL, "dip")
    assert mean.expected_psnr == pytest.approx(29.0) and mean.n_cells == 2
    deviations = np.array([0.05, 0.15, 1.5])
    assert mean.spread == pytest.approx(np.sqrt(np.mean(deviations**2)), abs=1e-4)
    assert "3 seed run(s) (seed-1, seed-2, seed-3)" in mean.derivation
    assert "1 kernel run(s) (avx2)" in mean.derivation


def test_without_variants_nothing_is_gated() -> None:
    table = check.derive_expected(_results(REFERENCE), {}, {})
    assert not table.gated.any() and table.tolerance.isna().all()


def test_verdicts_are_two_sided_and_missing_cells_fail() -> None:
    expected = _expected()
    same = check.compare(_results(REFERENCE), expected)
    assert set(same.verdict) <= {"ok", "reported"}
    assert check.failed(same).empty
    up = check.compare(_results({**REFERENCE, ("a", "tv", "out"): 25.5}), expected)
    assert _row(up, "cell", "a", "tv").verdict == "improvement"
    down = check.compare(_results({**REFERENCE, ("a", "tv", "out"): 24.5}), expected)
    assert _row(down, "cell", "a", "tv").verdict == "regression"
    assert len(check.failed(up)) >= 1 and len(check.failed(down)) >= 1
    # A failed cell: its row and its method's suite mean are missing, gated or not.
    partial = _results(REFERENCE).iloc[1:]
    report = check.compare(partial, expected)
    assert _row(report, "cell", "a", "dip").verdict == "missing"
    assert _row(report, "mean", check.ALL, "dip").verdict == "missing"


def test_update_without_variants_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    results = tmp_path / "results.csv"
    _results(REFERENCE).to_csv(results, index=False)
    argv = ["check", str(results), "--expected", str(tmp_path / "e.csv"), "--update"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "needs --variants" in capsys.readouterr().err
    variant = tmp_path / "seed-1"
    variant.mkdir()
    _variant(30.1, 28.1).to_csv(variant / "results.csv", index=False)
    assert main([*argv, "--variants", str(variant)]) == 0
    written = pd.read_csv(tmp_path / "e.csv")
    assert written["dev_seed-1"].notna().all()
    assert main(["check", str(results), "--expected", str(tmp_path / "e.csv")]) == 0


def test_method_seed_changes_only_the_methods_randomness() -> None:
    base = load_suite("inpainting-table1", "ci").cells()
    other = load_suite("inpainting-table1", "ci", method_seed=2).cells()
    assert [c.degradation_seed for c in base] == [c.degradation_seed for c in other]
    assert all(a.method_seed != b.method_seed for a, b in zip(base, other, strict=True))
    assert all(a.key("cpu") != b.key("cpu") for a, b in zip(base, other, strict=True))


def test_re_measuring_one_suite_keeps_the_others_values(tmp_path: Path) -> None:
    committed = Path(__file__).parent / "regression" / "expected_ci.csv"
    before = pd.read_csv(committed)
    path = tmp_path / "expected.csv"
    path.write_text(committed.read_text())
    remeasured = before[before.suite == "super-resolution"].copy()
    remeasured["expected_psnr"] += 1.0
    table, kept = expect.merged(remeasured, path)
    assert "super-resolution" not in kept and set(kept) == set(before.suite) - {"super-resolution"}
    assert len(table) == len(before)
    new_sr = table[table.suite == "super-resolution"].expected_psnr.astype(float)
    assert np.allclose(new_sr.to_numpy(), remeasured.expected_psnr.to_numpy())
    others = table[table.suite != "super-resolution"].reset_index(drop=True)
    same = before[before.suite != "super-resolution"].reset_index(drop=True)
    assert np.allclose(others.expected_psnr.astype(float), same.expected_psnr)
    # Written and read back, the merged file is a valid expected file of every suite.
    table.to_csv(path, index=False)
    assert set(check.read_expected(path).suite) == set(before.suite)
    # No file, or one that is not an expected file: the new values alone.
    assert expect.merged(remeasured, tmp_path / "none.csv")[1] == []


def test_a_run_of_one_suite_is_checked_against_that_suite_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An expected file of two suites, results of one: one line for the suite not run (not
    a line per value) and a failing check that names --suites; with --suites, the check of
    the suite run passes."""
    expected = _expected()
    other = expected.assign(suite="t")
    path = tmp_path / "expected.csv"
    pd.concat([expected, other]).to_csv(path, index=False)
    results = tmp_path / "results.csv"
    _results(REFERENCE).to_csv(results, index=False)
    assert main(["check", str(results), "--expected", str(path)]) == 1
    out, err = capsys.readouterr()
    assert f"t: no result of this suite here: its {len(other)} value(s) read missing" in out
    assert " t " not in out and "--suites s" in err
    assert main(["check", str(results), "--expected", str(path), "--suites", "s"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["check", str(results), "--expected", str(path), "--suites", "u"])
    assert exc.value.code == 2 and "no expected value and no result of u" in capsys.readouterr().err


def test_expect_of_some_methods_runs_their_cells_and_keeps_the_others_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``expect --methods tv``: every variant's run gets ``--methods tv``, and the written
    file keeps the values of the suite's other methods (dip) as they were."""
    commands: list[list[str]] = []

    def fake_run(command: list[str], **_: object) -> subprocess.CompletedProcess:
        commands.append(command)
        out = Path(command[command.index("--out") + 1])
        out.mkdir(parents=True)
        only_tv = {k: v for k, v in REFERENCE.items() if k[1] == "tv"}
        _results(only_tv).to_csv(out / "results.csv", index=False)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(expect.subprocess, "run", fake_run)
    measured = expect.measure(["s"], "ci", tmp_path / "work", {"x": "1"}, seeds=2, methods=["tv"])
    assert commands and all(c[c.index("--methods") + 1 :][:1] == ["tv"] for c in commands)
    assert set(measured.method) == {"tv"}
    path = tmp_path / "expected.csv"
    before = _expected()
    before.to_csv(path, index=False)
    table, kept = expect.merged(measured, path, ["tv"])
    assert kept == ["s: dip"]
    dip = table[table.method == "dip"].expected_psnr.astype(float).to_numpy()
    assert np.allclose(dip, before[before.method == "dip"].expected_psnr.to_numpy())
    assert len(table) == len(before)
