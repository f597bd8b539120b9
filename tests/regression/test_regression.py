"""The PSNR regression check: the `ci` grid of every suite against the committed expected values,
and five mutations that a real regression would look like, each of which must fail it.

`make update-expected` re-measures the grid and its spread over seeds and kernels and rewrites
``expected_ci.csv`` (see ``benchmark/check.py`` for how a tolerance is derived).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from benchmark.cli import main
from benchmark.forward import LanczosDownsampling
from benchmark.methods import zsn2n
from benchmark.suites import SUITES_DIR

# a run of every suite's ci grid (130 s), then the planted regressions: 7 tests, 210 s
pytestmark = pytest.mark.slow(seconds=33)

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


def test_expected_file_gates_the_stable_values() -> None:
    expected = pd.read_csv(EXPECTED)
    gated = expected[expected.gated]
    assert gated.tolerance.notna().all() and (gated.tolerance > 0).all()
    assert (expected.n_variants >= 11).all()  # 8 seeds and 3 kernel settings measured
    # Every suite's DIP is gated through at least one suite mean, and the Deep Decoder's
    # reported output (best loss) through its suite mean in every suite that runs it.
    means = gated[gated.statistic == "mean"]
    for suite in set(expected[expected.method == "dip"].suite):
        assert len(means[(means.suite == suite) & (means.method == "dip")]), suite
    runs_dd = expected[expected.method.str.startswith("dd")]
    assert "super-resolution" in set(runs_dd.suite)
    for suite, method in set(runs_dd[["suite", "method"]].itertuples(index=False)):
        mine = means[(means.suite == suite) & (means.method == method)]
        assert (mine.output == "best_loss").any(), f"{suite} {method}"
    # ZS-N2N through its suite mean (the planted loss without its consistency term fails it).
    assert (means.method == "zsn2n").any()
    # Classical methods are deterministic: every cell gated, at the floor or near it.
    networks = ["dip", "dd", "dd_k64", "zsn2n"]
    classical = expected[(expected.statistic == "cell") & ~expected.method.isin(networks)]
    assert classical.gated.all() and (classical.tolerance <= 0.1).all()


def _suite_with(tmp_path: Path, suite: str, old: str, new: str) -> Path:
    text = (SUITES_DIR / f"{suite}.toml").read_text()
    assert old in text, f"the {suite} suite no longer holds {old!r}: update the mutation"
    path = tmp_path / f"{suite}.toml"
    path.write_text(text.replace(old, new))
    return path


def _half_dip_iterations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    old = "fit = { iterations = 200, lr = 0.01 }"
    path = _suite_with(tmp_path, "inpainting-table1", old, "fit = { iterations = 100, lr = 0.01 }")
    return path, "dip"


def _ema_weight_0p9(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    old = (
        "[profiles.ci.methods.dip]\n"
        "network = { channels_down = 16, channels_up = 16, scales = 3 }\n"
        "fit = { iterations = 200 }"
    )
    new = old.replace("iterations = 200 }", "iterations = 200, ema_decay = 0.9 }")
    return _suite_with(tmp_path, "denoising-color", old, new), "dip"


def _sr_operator_shifted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """DIP's downsampler looking one high-resolution pixel to the side of the observation."""
    original = LanczosDownsampling.__call__

    def shifted(self: LanczosDownsampling, x: torch.Tensor) -> torch.Tensor:
        return original(self, torch.roll(x, shifts=1, dims=-1))

    monkeypatch.setattr(LanczosDownsampling, "__call__", shifted)
    return SUITES_DIR / "super-resolution.toml", "dip"


def _dd_sr_lr_0p003(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """The Deep Decoder's super-resolution learning rate 0.003 instead of its preset's 0.01."""
    old = "[profiles.ci.methods.dd]\nnetwork = { channels = 64 }\nfit = { iterations = 400 }"
    new = old.replace("iterations = 400 }", "iterations = 400, lr = 0.003 }")
    return _suite_with(tmp_path, "super-resolution", old, new), "dd"


def _zsn2n_without_consistency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """ZS-N2N's loss without its consistency term (the residual term alone)."""

    def residual_only(net: torch.nn.Module, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y1, y2 = zsn2n.pair_downsample(y)
        pred1, pred2 = y1 - net(y1), y2 - net(y2)
        loss = 0.5 * (F.mse_loss(pred1, y2) + F.mse_loss(pred2, y1))
        return loss, (y - net(y)).detach()

    monkeypatch.setattr(zsn2n, "zsn2n_loss", residual_only)
    return SUITES_DIR / "zero-shot-denoising.toml", "zsn2n"


MUTATIONS: dict[str, Callable[[Path, pytest.MonkeyPatch], tuple[Path, str]]] = {
    "half the DIP iterations": _half_dip_iterations,
    "EMA weight 0.9 instead of 0.99": _ema_weight_0p9,
    "SR operator shifted by one HR pixel": _sr_operator_shifted,
    "Deep Decoder SR learning rate 0.003": _dd_sr_lr_0p003,
    "ZS-N2N without its consistency term": _zsn2n_without_consistency,
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_mutation_fails_the_check(
    mutation: str,
    tmp_path: Path,
    mirror: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    suite_file, method = MUTATIONS[mutation](tmp_path, monkeypatch)
    out = tmp_path / "run"
    # Inline: the cells run in this process, where the monkeypatch holds.
    argv = ["run", str(suite_file), "--profile", "ci", "--methods", method, "--executor", "inline"]
    assert main([*argv, "--out", str(out), "-q", "--no-report"]) == 0
    expected = pd.read_csv(EXPECTED)
    suite = suite_file.stem
    mine = expected[(expected.suite == suite) & (expected.method == method)]
    assert mine.gated.any()
    subset = tmp_path / "expected.csv"
    mine.to_csv(subset, index=False)
    capsys.readouterr()
    assert main(["check", str(out / "results.csv"), "--expected", str(subset)]) == 1, mutation
    err = capsys.readouterr().err
    assert "moved beyond their tolerance" in err and f"{method}/" in err
    if method == "dd":  # the output a table reports, through the mean that is gated
        assert "suite mean (super-resolution) dd/best_loss" in err
