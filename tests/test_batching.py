"""Batched fitting: stacked networks, fit_many against one-at-a-time fits, the runner's
grouping, and the ``dipbench speed`` report."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_priors import Sabotaged, seeded

from benchmark import degradations as deg
from benchmark import runfolder, runner
from benchmark.cli import main
from benchmark.methods.fit import FitConfig, fit, fit_many, step_gflop_at
from benchmark.methods.networks import (
    DecoderConfig,
    DeepDecoder,
    SkipConfig,
    SkipNet,
    reset_parameters,
)
from benchmark.methods.priors import build_network
from benchmark.methods.stacking import stack_networks
from benchmark.metrics import psnr
from benchmark.speed import noisy_cells, setup_for
from benchmark.suites import load_suite


def _nets(make, count: int) -> list[torch.nn.Module]:
    nets = []
    for seed in range(count):
        net = make()
        reset_parameters(net, torch.Generator().manual_seed(seed))
        nets.append(net)
    return nets


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (
            lambda: SkipNet(SkipConfig(scales=2, channels_down=5, channels_up=7, channels_skip=3)),
            (1, 32, 12, 20),
        ),
        (lambda: DeepDecoder(DecoderConfig(channels=6, layers=3)), (1, 6, 3, 5)),
    ],
)
@pytest.mark.parametrize("exact", [True, False])
def test_a_stacked_network_is_the_networks_side_by_side(make, shape, exact: bool) -> None:
    nets = _nets(make, 3)
    stacked = stack_networks(nets, exact=exact)
    inputs = [torch.rand(shape, generator=torch.Generator().manual_seed(9 + i)) for i in range(3)]
    with torch.no_grad():
        together = stacked(torch.cat(inputs, dim=1))
        alone = torch.cat([net(z) for net, z in zip(nets, inputs, strict=True)], dim=1)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in stacked.parameters()) == 3 * sum(
        p.numel() for p in nets[0].parameters()
    )


@pytest.mark.parametrize(
    "network",
    [
        {"kind": "skip", "scales": 3, "channels_down": 20, "channels_up": 12},
        {"kind": "decoder", "channels": 16, "layers": 3},
    ],
)
def test_step_gflop_is_counted_once_per_architecture_and_size(network: dict) -> None:
    nets = _nets(lambda: build_network(network, 3, torch.Generator()), 3)
    first = step_gflop_at(nets[0], 40, 24)
    assert first > 0 and step_gflop_at(nets[1], 40, 24) == first
    assert step_gflop_at(nets[0], 80, 48) == pytest.approx(4 * first, rel=0.05)
    # A stacked network (not what its config describes) is counted, not looked up.
    assert step_gflop_at(stack_networks(nets), 40, 24) == pytest.approx(3 * first, rel=0.01)


def _layer_pair(kind: str, channels: int, networks: int) -> tuple[list, torch.nn.Module]:
    """``networks`` lone layers and the same layers stacked (``exact``)."""
    make = {
        "conv1x1": lambda: torch.nn.Conv2d(channels, channels + 1, 1),
        "conv3x3": lambda: torch.nn.Conv2d(channels, channels, 3),
        "batchnorm": lambda: torch.nn.BatchNorm2d(channels),
        "upsample": lambda: torch.nn.Upsample(scale_factor=2, mode="bilinear"),
        "sigmoid": torch.nn.Sigmoid,
    }[kind]
    lone = _nets(lambda: torch.nn.Sequential(make()), networks)
    for i, layer in enumerate(lone):
        layer.input_channels = channels  # what stack_networks reads of a network
        # BatchNorm starts at weight 1, bias 0: vary them.
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(torch.rand(p.shape, generator=torch.Generator().manual_seed(i)))
    return lone, stack_networks(lone)


@pytest.mark.parametrize(
    ("kind", "channels", "size"),
    [
        ("conv1x1", 33, 17),
        ("conv3x3", 20, 7),
        ("conv3x3", 16, 21),
        ("batchnorm", 20, 9),
        ("upsample", 20, 5),
        ("sigmoid", 3, 61),
    ],
)
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("onednn", [True, False])
def test_stacked_layers_compute_each_networks_numbers_bit_for_bit(
    kind: str, channels: int, size: int, layout: str, onednn: bool, monkeypatch
) -> None:
    # oneDNN's 1x1 and small-image kernels, and vectorised BatchNorm over a channel count
    # that is not a multiple of the vector width, round differently in one grouped call;
    # the stacked layers notice it and call each network's part in turn where they must.
    # The sigmoid's scalar exp, on the last elements of a thread's share, can differ from its
    # vector exp: a joined tensor puts other elements there.
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    networks = 5
    lone, stacked = _layer_pair(kind, channels, networks)
    generator = torch.Generator().manual_seed(3)
    shape = (1, channels, size, size + 2)
    if kind == "sigmoid":  # only inputs whose sigmoid depends on the code path
        values = _where_vector_and_scalar_sigmoid_differ(generator)
        pick = lambda: values[torch.randint(len(values), shape, generator=generator)]  # noqa: E731
        xs = [pick() for _ in range(networks)]
    else:
        xs = [torch.randn(shape, generator=generator) for _ in range(networks)]
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", onednn)
    stacked = stacked.to(memory_format=fmt)
    joined = torch.cat(xs, 1).contiguous(memory_format=fmt).requires_grad_()
    out = stacked(joined)
    grad_out = torch.randn(out.shape, generator=generator).contiguous(memory_format=fmt)
    out.backward(grad_out)
    parts = grad_out.chunk(networks, dim=1)
    for g, (layer, x) in enumerate(zip(lone, xs, strict=True)):
        layer = layer.to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt).requires_grad_()
        y = layer(x)
        y.backward(parts[g].contiguous(memory_format=fmt))
        assert torch.equal(out.chunk(networks, dim=1)[g], y)
        assert torch.equal(joined.grad.chunk(networks, dim=1)[g], x.grad)
        for mine, theirs in zip(stacked.parameters(), layer.parameters(), strict=True):
            assert torch.equal(mine.grad.chunk(networks)[g], theirs.grad)
        for mine, theirs in zip(stacked.buffers(), layer.buffers(), strict=True):
            if mine.dim():  # running statistics
                assert torch.equal(mine.chunk(networks)[g], theirs)


def _where_vector_and_scalar_sigmoid_differ(generator: torch.Generator) -> torch.Tensor:
    x = torch.randn(4096, generator=generator) * 4
    vector = torch.sigmoid(x)
    scalar = torch.cat([torch.sigmoid(v.reshape(1)) for v in x])  # one element: no vector
    if torch.equal(vector, scalar):
        pytest.skip("this CPU's vector and scalar sigmoid agree: nothing to tell apart")
    return x[vector != scalar]


def test_cells_on_onednn_kernels_fitted_together_equal_one_at_a_time() -> None:
    """The full profile's cifar10-noise network runs on oneDNN: a smaller network of the
    same kind (3 scales, 1x1 convolutions, a 24-channel join) on oneDNN, 4 cells."""
    net = {"kind": "skip", "scales": 3, "channels_down": 20, "channels_up": 20}
    cfg = FitConfig(
        iterations=40, lr=0.01, reg_noise_std=1 / 30, cpu_convolutions="onednn", check_every=10
    )
    observations, _ = noisy_cells(4, 24)
    nets = _nets(lambda: build_network(net, 3, torch.Generator()), 4)
    together = fit_many(nets, observations, cfg, seeds=[5, 6, 7, 8], device="cpu")
    for b in (0, 3):
        alone = fit(copy.deepcopy(nets[b]), observations[b], cfg, seed=5 + b, device="cpu")
        for name in ("last", "ema"):
            np.testing.assert_array_equal(together[b].outputs[name], alone.outputs[name])


@pytest.mark.slow(seconds=12)
def test_sixteen_cifar_size_cells_fitted_together_equal_one_at_a_time() -> None:
    """The cifar10-noise network (quick profile: DIP, 3 scales, 32 channels), 100 steps."""
    setup = setup_for("dip", suite="cifar10-noise", profile="quick")
    observations, cleans = noisy_cells(16, 32)
    nets = _nets(lambda: _build(setup), 16)
    cfg = FitConfig.from_mapping({**setup.fit.__dict__, "iterations": 100, "snapshots": [50]})
    seeds = list(range(100, 116))
    together = fit_many(
        nets, observations, cfg, seeds=seeds, device="cpu", monitor_references=cleans
    )
    for b in (0, 7, 15):
        alone = fit(
            copy.deepcopy(nets[b]),
            observations[b],
            cfg,
            seed=seeds[b],
            device="cpu",
            monitor_reference=cleans[b],
        )
        assert together[b].info["batch"] == 16
        for name in ("last", "ema", "es", "best_loss", "oracle"):
            difference = abs(
                psnr(together[b].outputs[name], cleans[b]) - psnr(alone.outputs[name], cleans[b])
            )
            assert difference <= 1e-3, (b, name, difference)
        np.testing.assert_allclose(
            together[b].curves["psnr_last"], alone.curves["psnr_last"], atol=1e-3
        )
        np.testing.assert_allclose(together[b].snapshots[50], alone.snapshots[50], atol=1e-5)
    # The cells did learn: DIP at step 100 beats the noisy input on these smooth images.
    gains = [
        psnr(r.outputs["ema"], c) - psnr(o.y, c)
        for r, o, c in zip(together, observations, cleans, strict=True)
    ]
    assert min(gains) > 0.0 and np.mean(gains) > 0.5


def _build(setup):
    return build_network(setup.network, 3, torch.Generator())


@pytest.mark.parametrize("task", ["denoising", "inpainting", "super_resolution"])
def test_batched_cells_of_every_task_equal_one_at_a_time_in_every_number(task: str) -> None:
    # Odd sizes, large enough that a mean over a batch's interleaved memory (channels_last,
    # as oneDNN runs) sums in another order than over a lone cell's, and that vector loops
    # meet other elements: the losses, ES-WMV's variances and every output must still agree.
    rng = np.random.default_rng(0)
    cleans = [rng.random((97, 83, 3)).astype(np.float32) for _ in range(2)]
    degrade = {
        "denoising": lambda c, r: deg.gaussian(c, 25, r),
        "inpainting": lambda c, r: deg.bernoulli(c, 0.5, r),
        "super_resolution": lambda c, r: deg.downsample(c, 4, r),
    }[task]
    degraded = [degrade(c, np.random.default_rng(i)) for i, c in enumerate(cleans)]
    observations = [d.observation for d in degraded]
    targets = [d.target for d in degraded]
    make = lambda: SkipNet(SkipConfig(scales=2, channels_down=8, channels_up=8))  # noqa: E731
    nets = _nets(make, 2)
    cfg = FitConfig(
        iterations=40,
        reg_noise_std=0.03,
        record_every=1,
        es_window=10,
        cpu_convolutions="onednn",
    )
    together = fit_many(
        nets, observations, cfg, seeds=[3, 4], device="cpu", monitor_references=targets
    )
    for b in range(2):
        alone = fit(
            copy.deepcopy(nets[b]),
            observations[b],
            cfg,
            seed=3 + b,
            device="cpu",
            monitor_reference=targets[b],
        )
        for column in alone.curves:
            np.testing.assert_array_equal(together[b].curves[column], alone.curves[column])
        assert together[b].outputs.keys() == alone.outputs.keys()
        for name in alone.outputs:
            np.testing.assert_array_equal(together[b].outputs[name], alone.outputs[name])


def test_a_cell_that_needs_backtracking_in_a_batch_is_refitted_alone() -> None:
    clean = np.random.default_rng(0).random((24, 20, 3)).astype(np.float32)
    observation = deg.gaussian(clean, 10, np.random.default_rng(0)).observation
    cfg = FitConfig(iterations=100, lr=0.01, check_every=25, backtrack_db=5.0)
    nets = [seeded(Sabotaged(corrupt_at=40)) for _ in range(2)]
    twin = copy.deepcopy(nets[1])
    results = fit_many(nets, [observation] * 2, cfg, seeds=[0, 1], device="cpu")
    alone = fit(twin, observation, cfg, seed=1, device="cpu")
    assert [r.info["batch"] for r in results] == [1, 1]
    assert [r.info["restores"] for r in results] == [1, 1]
    np.testing.assert_array_equal(results[1].outputs["last"], alone.outputs["last"])


def test_cells_that_stop_early_are_not_batched() -> None:
    observations, _ = noisy_cells(2, 16)
    nets = _nets(lambda: SkipNet(SkipConfig(scales=2, channels_down=4, channels_up=4)), 2)
    with pytest.raises(ValueError, match="stop early"):
        fit_many(nets, observations, FitConfig(iterations=5, stop_early=True), seeds=[0, 1])


def test_the_runner_groups_compatible_cells(mirror: Path) -> None:
    cells = [c for c in load_suite("denoising-color", "ci").cells() if c.method in ("dip", "bm3d")]
    units = runner.batches(cells, "cpu", "auto")
    assert sorted(c.key("x") for u in units for c in u) == sorted(c.key("x") for c in cells)
    for unit in units:
        assert len({(c.method, str(c.method_options), c.dataset) for c in unit}) == 1
        assert unit[0].method == "dip" or len(unit) == 1
    assert max(len(u) for u in units) > 1
    assert all(len(u) == 1 for u in runner.batches(cells, "cpu", 1))
    assert max(len(u) for u in runner.batches(cells, "cpu", 2)) == 2


def test_batched_run_equals_one_cell_at_a_time(tmp_path: Path, mirror: Path) -> None:
    argv = [
        "run",
        "denoising-color",
        "--profile",
        "ci",
        "--methods",
        "dip",
        "dd",
        "--device",
        "cpu",
        "-q",
        "--no-report",
    ]
    assert main([*argv, "--out", str(tmp_path / "alone"), "--batch", "1"]) == 0
    assert main([*argv, "--out", str(tmp_path / "together"), "--batch", "auto"]) == 0
    alone = pd.read_csv(tmp_path / "alone" / "results.csv").set_index(["key", "output"]).psnr
    together = pd.read_csv(tmp_path / "together" / "results.csv").set_index(["key", "output"]).psnr
    pd.testing.assert_index_equal(alone.sort_index().index, together.sort_index().index)
    assert np.abs(alone.sort_index().to_numpy() - together.sort_index().to_numpy()).max() <= 1e-3
    records = [runfolder.Record.read(p) for p in (tmp_path / "together" / "cells").glob("*.json")]
    assert max(r.info["batch"] for r in records) > 1
    # a batched cell's seconds is the batch's wall time: at least the whole fit's (the fit
    # reports its share, info.seconds, the fit's time divided by the batch size)
    for r in (r for r in records if r.info["batch"] > 1):
        assert r.seconds >= r.info["seconds"] * r.info["batch"] > 0


def test_bad_batch_value_exits_2(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "denoising-color", "--batch", "zero"])
    assert exit_info.value.code == 2
    assert "auto or a number" in capsys.readouterr().err


def test_speed_prints_its_report(capsys: pytest.CaptureFixture) -> None:
    argv = [
        "speed",
        "--size",
        "32",
        "--batch",
        "2",
        "--batch-steps",
        "4",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--no-estimate",
        "--suite",
        "cifar10-noise",
        "--profile",
        "ci",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    report = capsys.readouterr().out
    for expected in (
        "plain eager PyTorch loop",
        "bookkeeping",
        "freed memory: kept for the next step",
        "2 cells, 32x32",
        "cell-steps/s",
        "convolution throughput",
        "of it",
    ):
        assert expected in report
    difference = float(report.split("batched vs alone: ")[1].split(" dB")[0])
    assert difference <= 1e-3 and not math.isnan(difference)


def test_speed_with_an_unknown_suite_exits_2(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["speed", "--suite", "nope", "--no-estimate"])
    assert exit_info.value.code == 2
