"""What ``dipbench restore`` will do, settled before it does it: the method checked against the
task, the options it is called with, and for a network method its preset, steps, size,
device, memory and time (measured as the run's estimate measures), said up front and kept
for the sidecar (:mod:`benchmark.cli.restore`)."""

from __future__ import annotations

import argparse
from typing import Any

from benchmark.cli.options import UsageError


def check_method(args: argparse.Namespace) -> Any:
    from benchmark.methods import all_methods, get_method

    try:
        info = get_method(args.method)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    if args.task not in info.tasks:
        fits = sorted(m for m, i in all_methods().items() if args.task in i.tasks)
        raise UsageError(
            f"{args.method} does not do {args.task}; methods that do: {', '.join(fits)}"
        )
    if info.network is None and (args.iterations or args.preset):
        raise UsageError(f"--iterations and --preset are for network methods; {args.method} is not")
    if args.output == "oracle":
        raise UsageError("--output oracle needs the clean image; restore has none")
    return info


def method_options(
    args: argparse.Namespace, info: Any, observation: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options the method is called with (its ``--option``s, checked as a suite's are;
    for a method configured by presets, ``--preset`` and ``--iterations``; the device for a
    method that takes one) and the settings the sidecar records."""
    from benchmark.device import resolve_device
    from benchmark.suite_schema import check_options_for

    given = dict(args.option or [])
    check_options_for(info, args.task, observation.factor, given, args.method, UsageError)
    options = {**given, "device": args.device} if info.needs_device else dict(given)
    recorded = {"options": given} if given else {}
    if info.network is None:
        return options, recorded
    setting = _preset_setting(info, args.task, observation.factor, given)
    if setting is None:  # a network method without presets: its own options only
        if args.iterations or args.preset:
            raise UsageError(
                f"--iterations and --preset are for methods configured by presets (dip, dd); "
                f"pass {args.method}'s options with --option KEY=VALUE"
            )
        steps = info.network.iterations(args.task, observation.factor, **options)
        h, w = observation.output_shape[:2]
        print(
            f"{args.method}: {steps} steps at {w}x{h} on {resolve_device(args.device)}"
            + _time_needed(info, observation, options, steps, args.device, recorded)
        )
        return options, recorded
    fit_options: dict[str, Any] = {"iterations": args.iterations} if args.iterations else {}
    if args.task == "denoising" and args.output in (None, "es") and "es" in info.outputs:
        # ES-WMV's output is frozen once it detects: the steps after it change nothing kept
        fit_options["stop_early"] = True
        if args.iterations:
            # ES-WMV's window and patience measure how fast the output moves, not the
            # budget: kept at the preset's, so a short fit falls back on the EMA rather
            # than "detecting" in its first steps
            fit_options["es_window"] = setting[1].es_window
            fit_options["es_patience"] = setting[1].es_patience
    options.update(preset=args.preset, fit_options=fit_options)
    plan = _network_plan(args, info, observation, given, fit_options, options)
    return options, {**plan, **recorded}


def _time_needed(
    info: Any,
    observation: Any,
    options: dict[str, Any],
    steps: int,
    device: str,
    recorded: dict[str, Any],
) -> str:
    """The fit's time by the run's estimate model (a few steps measured through the method's
    network contract, times its steps), as "; about 41 min (a step measured here: 1.23 s)",
    also recorded as ``estimated_seconds``; "" where the contract cannot time a step."""
    import numpy as np

    from benchmark.heap import kept_heap
    from benchmark.runner.estimate import contract_step, warmup_steps

    target = np.zeros(observation.output_shape, dtype=np.float32)  # no ground truth here
    with kept_heap():  # as the fit will run
        step = contract_step(
            info.network, [observation], [target], device,
            {k: v for k, v in options.items() if k != "device"},
            steps=5, warmup=warmup_steps(device), min_seconds=0.5,  # as the run's estimate
        )  # fmt: skip
    if not step:
        return ""
    recorded["estimated_seconds"] = round(step * steps, 1)
    return f"; about {_minutes(step * steps)} (a step measured here: {step:.3g} s)"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _preset_setting(info: Any, task: str, factor: int | None, options: dict[str, Any]) -> Any:
    """The method's (network table, fit settings) for these options, or None when it
    declares none (:meth:`NetworkMethod.setting`)."""
    try:
        return info.network.setting(task, factor, **options)
    except NotImplementedError:
        return None


def _network_plan(
    args: argparse.Namespace,
    info: Any,
    observation: Any,
    given: dict[str, Any],
    fit_options: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    """Say what the fit will be (preset, steps, size, device, the memory it needs) before it
    starts; returns the settings for the sidecar, resolved from the very options the fit
    gets (``fit_options``)."""
    from benchmark.device import resolve_device
    from benchmark.methods.fit.devices import available_memory, fit_memory
    from benchmark.methods.networks import padded_size
    from benchmark.methods.priors import build_network

    network, cfg = info.network.setting(
        args.task,
        observation.factor,
        **{**given, "preset": args.preset, "fit_options": fit_options},
    )
    import torch

    net = build_network(network, observation.y.shape[2], torch.Generator().manual_seed(0))
    h, w = observation.output_shape[:2]
    per_pixel, fixed = fit_memory(net, h, w)
    needed = (
        per_pixel
        * padded_size(h, net.multiple, net.minimum)
        * padded_size(w, net.multiple, net.minimum)
        + fixed
    )
    dev = resolve_device(args.device)
    free = available_memory(dev)
    planned: dict[str, Any] = {"network": network, "fit": {k: getattr(cfg, k) for k in vars(cfg)}}
    print(
        f"{args.method}: {cfg.iterations} steps at {w}x{h} on {dev}; about "
        f"{needed / 2**20:.0f} MiB"
        + (f" of {free / 2**20:.0f} MiB free" if free else "")
        + _time_needed(info, observation, options, cfg.iterations, args.device, planned)
    )
    return planned
