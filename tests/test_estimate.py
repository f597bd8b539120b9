"""The run's time estimate (measured steps at the shapes the run fits, summed), checked with a
fake clock and against what a run really does; and batched fits equal lone fits in
distribution when they are not bit for bit (the GPU's case)."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmark import runner
from benchmark.methods.fit import FitConfig, fit_many
from benchmark.metrics import psnr
from benchmark.runner import estimate as est
from benchmark.runner.planning import network_setting
from benchmark.speed import fresh_networks, noisy_cells, setup_for
from benchmark.suites import load_suite


class FakeClock:
    """A clock that moves only when told: each call returns the time, then advances it."""

    def __init__(self, step: float) -> None:
        self.now, self.step, self.calls = 100.0, step, 0

    def __call__(self) -> float:
        self.calls += 1
        now = self.now
        self.now += self.step
        return now


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> tuple:
    """A real run: DIP (a fitted network) and Telea on the ci cells of Table 1's house."""
    suite = load_suite(
        "inpainting-table1", "ci", images_subset=["house"], methods_subset=["dip", "telea"]
    )
    out = tmp_path_factory.mktemp("estimate")
    table, records = runner.run_suite(suite, out, device="cpu", jobs=1, show_progress=False)
    assert (table.status == "ok").all()
    return suite, records


def test_measure_step_times_only_the_timed_steps(small_run: tuple) -> None:
    suite, _ = small_run
    network_cell = next(c for c in suite.cells() if network_setting(c) is not None)
    (shape,) = [s for s in est.plan([network_cell], "cpu") if s.cell == network_cell]
    clock = FakeClock(step=0.9)  # each reading 0.9 s after the last: 0.9 s a step
    seconds = est.measure_step(shape, "cpu", steps=5, warmup=2, min_seconds=2.0, clock=clock)
    # Read once before the timed steps and after each (never in the warm-up), until 2 s.
    assert clock.calls == 1 + 3
    assert seconds == pytest.approx(0.9)
    clock = FakeClock(step=0.9)
    assert est.measure_step(shape, "cpu", steps=2, min_seconds=60, clock=clock) == pytest.approx(
        0.9
    )
    assert clock.calls == 1 + 2  # at most `steps` steps, however short


def test_the_plan_counts_the_steps_and_cells_the_run_computed(small_run: tuple) -> None:
    """Network shapes count the steps of their units (a batch's steps once), other methods
    their cells: what the records of the real run say was done."""
    suite, records = small_run
    work = est.plan(suite.cells(), "cpu")
    done: dict[str, float] = {}
    for record in records:
        method = record.cell["method_key"]
        info = record.info
        steps = info["iterations"] / info["batch"] if "iterations" in info else 1
        done[method] = done.get(method, 0) + steps
    planned: dict[str, int] = {}
    for shape, count in work.items():
        planned[shape.cell.method_key] = planned.get(shape.cell.method_key, 0) + count
    assert planned == pytest.approx(done)
    assert planned["dip"] > 1 and planned["telea"] == 1


def test_the_estimate_is_the_run_under_a_fake_cost_model(small_run: tuple) -> None:
    """Each shape is measured once; with step and cell times from a fake cost model, the
    estimate equals what that model charges for the units the run computed."""
    suite, records = small_run

    def cost(shape: est.Shape) -> float:  # bigger images and batches cost more
        return 1e-5 * shape.height * shape.width * shape.batch**0.5

    measured: list[est.Shape] = []

    def fake(shape: est.Shape) -> float:
        measured.append(shape)
        return cost(shape)

    estimate = est.estimate(suite.cells(), "cpu", step=fake, cell=fake)
    assert len(measured) == len(set(measured)) == len(estimate.parts)
    charged = 0.0
    shapes = {s.cell.key("cpu"): s for s in est.plan(suite.cells(), "cpu")}
    for record in records:
        info = record.info
        shape = next(s for s in shapes.values() if s.cell.method_key == record.cell["method_key"])
        if "iterations" in info:
            charged += info["iterations"] / info["batch"] * cost(shape)
        else:
            charged += cost(shape)
    assert estimate.seconds == pytest.approx(charged, rel=1e-9)
    assert estimate.wall(1) == pytest.approx(charged, rel=1e-9)
    assert "dip" in estimate.table()


@pytest.mark.slow(seconds=10)
def test_batched_fits_equal_lone_fits_in_distribution() -> None:
    """Without exact stacking (CUDA's case: equal up to float rounding, which DIP's training
    amplifies), a batched cell is not its lone fit bit for bit; over seeds, the two PSNR
    distributions must still agree: each mean within the other's seed spread."""
    seeds = list(range(6))
    setup = setup_for("dip", suite="cifar10-noise", profile="quick")
    observations, cleans = noisy_cells(1, 32)
    # oneDNN's grouped convolutions round a batch unlike lone cells (native ones do not).
    fit = {**setup.fit.__dict__, "iterations": 100, "snapshots": [], "cpu_convolutions": "onednn"}
    cfg = FitConfig.from_mapping(fit)
    nets = fresh_networks(setup, len(seeds))
    lone = [
        fit_many([net], observations, cfg, seeds=[s], device="cpu")[0]
        for net, s in zip(fresh_networks(setup, len(seeds)), seeds, strict=True)
    ]
    together = fit_many(
        nets, observations * len(seeds), cfg, seeds=seeds, device="cpu", exact=False
    )
    a = [psnr(r.outputs["last"], cleans[0]) for r in lone]
    b = [psnr(r.outputs["last"], cleans[0]) for r in together]
    assert not np.allclose(a, b, atol=1e-6, rtol=0)  # not bit for bit: the test is not vacuous
    # Each mean inside the other's spread over seeds (its range): a batch that mixed its
    # cells (shared BatchNorm statistics, one noise stream) would sit dBs away.
    assert min(a) <= statistics.mean(b) <= max(a), (a, b)
    assert min(b) <= statistics.mean(a) <= max(b), (a, b)


def test_the_wall_time_of_several_workers_follows_the_pool() -> None:
    """Workers take the units in order, each the next one as it comes free."""
    planned = est.Estimate(seconds=8.0, units=[3.0, 3.0, 2.0])
    assert planned.wall(1) == 8.0
    assert planned.wall(2) == 5.0  # 3 | 3, then 2 after the first 3
    assert planned.wall(4) == 3.0
    assert est.Estimate(units=[6.0, 1.0, 1.0, 1.0]).wall(2) == 6.0


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (90, "2 min"),
        (3.2 * 3600, "3.2 h"),
        (100 * 3600, "100 h (about 4 days)"),
        (2473 * 3600, "2,473 h (about 3 months)"),
        (11366 * 3600, "11,366 h (about 16 months)"),
        (30000 * 3600, "30,000 h (about 3.4 years)"),
    ],
)
def test_long_estimates_are_said_in_human_units(seconds: float, said: str) -> None:
    from benchmark.cli.runs import human_duration

    assert human_duration(seconds) == said


def test_the_h100_model_holds_the_steps_measured_there() -> None:
    step, cell = est.h100_model()
    shape = est.Shape(signature="s", cell=None, height=128, width=128, batch=1)  # type: ignore[arg-type]
    assert step(shape) == pytest.approx(0.0193)  # launch-bound: no cheaper at 64x64
    assert step(replace(shape, height=64, width=64)) == pytest.approx(0.0193)
    assert step(replace(shape, height=512, width=512)) == pytest.approx(0.0198)
    # Four 512x512 cells in one step cost four times one; a classical cell its 2 s.
    assert step(replace(shape, height=512, width=512, batch=4)) == pytest.approx(4 * 0.0198)
    assert cell(shape) == 2.0


def test_the_progress_weighs_each_cell_by_its_estimate(small_run: tuple) -> None:
    """The run's estimate reaches the progress under the records' own keys, so its time left
    is the estimate's remaining share at the pace so far, not a count of cells."""
    from benchmark.runner.executors import unit_costs
    from benchmark.runner.planning import batches

    suite, records = small_run
    units = batches(suite.cells(), "cpu", "auto")
    costs = unit_costs(units, [10.0 * (i + 1) for i in range(len(units))], "cpu", 1)
    assert costs is not None and set(costs) == {r.key for r in records}
    assert sum(costs.values()) == pytest.approx(sum(10.0 * (i + 1) for i in range(len(units))))
    assert unit_costs(units, [1.0] * (len(units) + 1), "cpu", 1) is None  # other units


def test_time_left_is_the_estimates_share_still_to_do(capsys: pytest.CaptureFixture) -> None:
    """One 36-minute cell and one 7-minute cell: after the first (taking 72 min on a busy
    machine), 7/36 of 72 min are left, not another 72."""
    from types import SimpleNamespace

    from benchmark.runner.progress import LogLines, Work, take

    work = Work({"dip": 36 * 60.0, "dd": 7 * 60.0})
    work.add([SimpleNamespace(key="dip")])
    assert work.minutes_left(72.0, 1, 2) == pytest.approx(72.0 * 7 / 36)
    assert work.minutes_left(72.0, 2, 2) is None
    assert Work(None).minutes_left(72.0, 1, 2) == pytest.approx(72.0)  # by count

    bar = LogLines(2, costs={"dip": 36 * 60.0, "dd": 7 * 60.0})
    bar.started -= 72 * 60  # the first cell took 72 minutes
    take([SimpleNamespace(key="dip", ok=True)], [], bar)
    line = capsys.readouterr().err.strip()
    assert line.startswith("cells 1/2 after 72.0 min") and line.endswith("about 14.0 min left")
