"""How fast the fitting loop runs here: the report of ``dipbench speed``.

Four measurements, all in one process and interleaved so that a busy machine slows every
variant alike:

1. one cell: a plain eager PyTorch loop of the same network (forward, MSE, ``zero_grad``,
   backward, Adam: what the papers' code does, without its per-step host reads), our bare
   step (the same, with our memory format and kernels), and our whole loop (with EMA,
   ES-WMV, best-loss and oracle trackers, curves, check points and checkpoints), all with
   freed memory kept for the next step as fits keep it (:mod:`benchmark.heap`), or handed
   back at once under ``DIPBENCH_KEEP_HEAP=0`` (measured in a process of its own: once a
   process has changed malloc's settings, glibc's own thresholds cannot be had back);
2. a batch: B cells one at a time, then fitted together by :func:`fit_many`, with the largest
   PSNR difference between the two;
3. the machine's convolution throughput (a 3x3 convolution's forward and backward) and the
   fraction of it that a fit step achieves;
4. the estimated wall time of every suite's ``full`` profile from a measured step.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.degradations import Observation, gaussian
from benchmark.heap import heap_kept, kept_heap
from benchmark.methods.fit import (
    FitConfig,
    FitState,
    cpu_convolution_backend,
    device_settings,
    fit_many,
    resolve_device,
    step_gflop,
    train,
)
from benchmark.methods.networks import padded_size
from benchmark.methods.priors import build_network, resolve_setting
from benchmark.metrics import psnr


@dataclass
class Setup:
    """The network and optimisation measured: a preset, or a suite's method entry."""

    method: str
    label: str
    network: dict[str, Any]
    fit: FitConfig


@dataclass
class SpeedReport:
    """Everything ``dipbench speed`` prints (seconds are per step)."""

    device: str
    threads: int
    setup: Setup
    size: int
    eager_seconds: float = float("nan")
    bare_seconds: float = float("nan")
    loop_seconds: float = float("nan")
    heap_kept: bool = False  # whether freed memory was kept for the next step
    batch: int = 0
    batch_size: int = 0
    alone_cell_steps: float = float("nan")  # cell-steps per second
    batched_cell_steps: float = float("nan")
    batch_psnr_difference: float = float("nan")
    batch_steps: int = 0
    conv_gflops: float = float("nan")
    step_gflop: float = float("nan")
    suite_hours: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def preset_configured(method: str) -> bool:
    """Whether ``method``'s network and fit come from presets (this report's loop); another
    network method is measured through its contract (:mod:`benchmark.speed_contract`)."""
    from benchmark.methods.priors import load_presets

    return method in load_presets()


def setup_for(
    method: str, *, suite: str | None = None, profile: str = "full", preset: str | None = None
) -> Setup:
    """The network of ``method``'s default denoising preset, a named preset, or a suite's.

    Raises
    ------
    KeyError
        ``method`` is not configured by presets (its fit loop is its own: not this report's).
    """
    from benchmark.methods import get_method
    from benchmark.methods.priors import load_presets

    if method not in load_presets():
        info = get_method(method)  # an unknown name: KeyError listing the known ones
        raise KeyError(
            f"dipbench speed measures the fitting loop that methods configured by presets "
            f"share ({', '.join(load_presets())}); {info.name} fits its own: its cells' time is "
            "in the estimate of dipbench run and in each record's seconds"
        )
    options: Mapping[str, Any] = {}
    label = ""
    if suite is not None:
        from benchmark.suites import load_suite

        loaded = load_suite(suite, profile)
        specs = [m for m in loaded.methods if m.method == method]
        if not specs:
            raise KeyError(f"suite {suite!r} has no {method} entry")
        options = specs[0].options_for(loaded.degradations[0]["kind"])
        label = f"{suite} ({profile}) "
    chosen, network, fit = resolve_setting(
        method,
        "denoising",
        preset=preset or options.get("preset"),
        network=options.get("network"),
        fit_options=options.get("fit_options"),
    )
    shown = ", ".join(f"{k}={v}" for k, v in network.items() if k != "kind")
    return Setup(method, f"{label}{method} preset {chosen.name!r}: {shown}", network, fit)


def noisy_cells(count: int, size: int, seed: int = 0) -> tuple[list[Observation], list[np.ndarray]]:
    """Synthetic RGB cells (smooth gradients plus texture) under Gaussian noise, sigma 25."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    cleans, observations = [], []
    for i in range(count):
        phase = rng.random(3)
        image = 0.5 + 0.3 * np.sin(2 * np.pi * (xs[..., None] * (1 + i % 3) + phase))
        image = image * (0.8 + 0.2 * ys[..., None]) + 0.05 * rng.random((size, size, 3))
        clean = np.clip(image, 0, 1).astype(np.float32)
        cleans.append(clean)
        observations.append(gaussian(clean, 25, np.random.default_rng(seed + i)).observation)
    return observations, cleans


def fresh_networks(setup: Setup, count: int) -> list[nn.Module]:
    return [build_network(setup.network, 3, torch.Generator().manual_seed(i)) for i in range(count)]


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer sees it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def interleaved(
    variants: Mapping[str, Callable[[int], None]], steps: int, repeats: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per step of each variant, timed in turns."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():  # warm-up: allocator, kernel choice, lazy Adam state
        run(2)
    for _ in range(repeats):
        for name, run in variants.items():
            _synchronize(device)
            started = time.perf_counter()
            run(steps)
            _synchronize(device)
            times[name].append((time.perf_counter() - started) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def eager_reference(
    net: nn.Module, observation: Observation, cfg: FitConfig, device: torch.device, seed: int = 0
) -> Callable[[int], None]:
    """The plain loop: ``out = net(z + noise * std); loss = mse(out, y)``, backward, Adam."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(observation.y.transpose(2, 0, 1).copy())[None].to(device)
    h, w = y.shape[2:]
    ph, pw = padded_size(h, net.multiple, net.minimum), padded_size(w, net.multiple, net.minimum)
    z_shape = (1, net.input_channels, ph // net.input_downscale, pw // net.input_downscale)
    z = (torch.rand(z_shape, generator=generator) * cfg.input_scale).to(device)
    net = net.to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    noise = torch.empty_like(z)
    top, left = (ph - h) // 2, (pw - w) // 2

    def run(steps: int) -> None:
        for _ in range(steps):
            net_input = z + noise.normal_() * cfg.reg_noise_std if cfg.reg_noise_std else z
            out = net(net_input)[:, :, top : top + h, left : left + w]
            loss = F.mse_loss(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def our_runs(
    setup: Setup, observation: Observation, clean: np.ndarray, device: torch.device
) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """Our bare step, and our whole loop: trackers, curves, check points with their host
    reads and checkpoint copies (the fit's one-time set-up is left out of both)."""
    bare_net, loop_net = fresh_networks(setup, 2)
    bare = FitState([bare_net], [observation], setup.fit, [0], device, [clean])
    bare.track = False
    whole = FitState([loop_net], [observation], setup.fit, [0], device, [clean])
    state = {"bare": 0, "whole": 0}

    def run_bare(steps: int) -> None:
        for _ in range(steps):
            state["bare"] += 1
            bare.step(state["bare"])

    def run_loop(steps: int) -> None:
        first = state["whole"] + 1
        train(whole, None, range(first, first + steps))
        state["whole"] += steps

    return run_bare, run_loop


def convolution_gflops(device: torch.device, repeats: int = 5) -> float:
    """GFLOP/s of a 3x3, 128-channel convolution's forward and backward at 128x128."""
    x = torch.randn(1, 128, 130, 130, device=device, requires_grad=True)
    weight = torch.randn(128, 128, 3, 3, device=device, requires_grad=True)
    flop = 3 * 2 * 128 * 128 * 9 * 128 * 128  # forward, input gradient, weight gradient

    def once() -> None:
        F.conv2d(x, weight).sum().backward()

    once()
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    _synchronize(device)
    return flop * repeats / (time.perf_counter() - started) / 1e9


def measure(
    method: str = "dip",
    *,
    size: int = 128,
    batch: int = 16,
    batch_size: int = 32,
    device: str = "auto",
    suite: str | None = None,
    profile: str = "full",
    steps: int = 10,
    repeats: int = 5,
    batch_steps: int = 100,
    estimate: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SpeedReport:
    """Measure everything the speed report shows (see the module's docstring)."""
    dev = resolve_device(device)
    say = progress or (lambda message: None)
    setup = setup_for(method, suite=suite, profile=profile)
    setup.fit = replace(setup.fit, snapshots=())
    report = SpeedReport(str(dev), torch.get_num_threads(), setup, size)

    say(f"one cell at {size}x{size}: eager reference, bare step, whole loop")
    observations, cleans = noisy_cells(1, size)
    reference_net = fresh_networks(setup, 1)[0]
    with device_settings(dev, setup.fit, step_gflop(reference_net, observations[0])):
        run_bare, run_loop = our_runs(setup, observations[0], cleans[0], dev)
    variants = {
        "eager": eager_reference(reference_net, observations[0], setup.fit, dev),
        "bare": settled(run_bare, dev, setup.fit, reference_net, observations[0]),
        "loop": settled(run_loop, dev, setup.fit, reference_net, observations[0]),
    }
    report.heap_kept = heap_kept()  # the host's heap, whatever the device
    with kept_heap():
        seconds = interleaved(variants, steps, repeats, dev)
    report.eager_seconds, report.bare_seconds = seconds["eager"], seconds["bare"]
    report.loop_seconds = seconds["loop"]
    backend = cpu_convolution_backend(setup.fit, step_gflop(reference_net, observations[0]))
    if dev.type == "cpu":
        report.notes.append(f"CPU convolutions of the one-cell figures: {backend}")

    if batch > 1:
        say(f"{batch} cells at {batch_size}x{batch_size}: one at a time, then together")
        with kept_heap():
            _measure_batch(report, setup, batch, batch_size, batch_steps, dev)

    say("convolution throughput")
    report.conv_gflops = convolution_gflops(dev)
    report.step_gflop = step_gflop(reference_net, observations[0])
    if estimate:
        say("suite estimates")
        report.suite_hours = _suite_hours(dev)
    return report


def with_heap(run: Callable[[int], None], keep: bool) -> Callable[[int], None]:
    """``run`` with freed memory kept for the next step (as fits run) or handed back to the
    system at once (glibc's default: a plain script)."""

    def run_so(steps: int) -> None:
        with kept_heap(keep):
            run(steps)

    return run_so


def settled(
    run: Callable[[int], None],
    dev: torch.device,
    cfg: FitConfig,
    net: nn.Module,
    observation: Observation,
) -> Callable[[int], None]:
    """``run`` under the convolution kernels a fit of this size uses."""
    gflop = step_gflop(net, observation)

    def run_settled(steps: int) -> None:
        with device_settings(dev, cfg, gflop):
            run(steps)

    return run_settled


def _measure_batch(
    report: SpeedReport, setup: Setup, batch: int, size: int, steps: int, dev: torch.device
) -> None:
    observations, cleans = noisy_cells(batch, size)
    nets = fresh_networks(setup, batch)
    cfg = replace(setup.fit, iterations=steps)
    seeds = list(range(batch))
    fit_many(
        fresh_networks(setup, 1),
        observations[:1],
        replace(cfg, iterations=2),
        seeds=[0],
        device=dev,
    )
    started = time.perf_counter()
    alone = [
        fit_many([copy.deepcopy(n)], [o], cfg, seeds=[s], device=dev, monitor_references=[c])[0]
        for n, o, s, c in zip(nets, observations, seeds, cleans, strict=True)
    ]
    _synchronize(dev)
    alone_seconds = time.perf_counter() - started
    started = time.perf_counter()
    together = fit_many(nets, observations, cfg, seeds=seeds, device=dev, monitor_references=cleans)
    _synchronize(dev)
    together_seconds = time.perf_counter() - started
    differences = [
        abs(psnr(a.outputs[k], c) - psnr(b.outputs[k], c))
        for a, b, c in zip(alone, together, cleans, strict=True)
        for k in ("last", "ema")
        if not isinstance(a, Exception) and not isinstance(b, Exception)
    ]
    report.batch, report.batch_size, report.batch_steps = batch, size, steps
    report.alone_cell_steps = batch * steps / alone_seconds
    report.batched_cell_steps = batch * steps / together_seconds
    report.batch_psnr_difference = max(differences) if differences else float("nan")


def _suite_hours(dev: torch.device) -> dict[str, float]:
    """Each packaged suite's full profile: steps measured at every shape it fits (per
    method, size and batch), summed (``runner.estimate``)."""
    from benchmark.runner.estimate import estimate
    from benchmark.suites import load_suite, packaged_suites

    return {
        name: estimate(load_suite(name, "full").cells(), str(dev)).seconds / 3600
        for name in packaged_suites()
    }
