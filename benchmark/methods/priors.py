"""Deep Image Prior and Deep Decoder as registered methods, configured by named presets."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.degradations import Observation
from benchmark.methods.contract import NetworkMethod
from benchmark.methods.fit import (
    FitConfig,
    FitError,
    cpu_convolution_backend,
    fit_many,
    step_gflop_at,
    time_steps,
)
from benchmark.methods.fit.config import scaled_schedule
from benchmark.methods.networks import (
    BATCHNORM_INITS,
    DecoderConfig,
    DeepDecoder,
    SkipConfig,
    SkipNet,
    reset_parameters,
)
from benchmark.methods.registry import Restoration, register
from benchmark.options import check_fields, check_known

PRESETS_PATH = Path(__file__).resolve().parents[1] / "data" / "presets.toml"

# The preset a task uses when none is named.
DEFAULT_PRESETS = {
    "dip": {"denoising": "denoising", "inpainting": "inpainting_table1"},
    "dd": {
        "denoising": "denoising",
        "inpainting": "inpainting",
        "super_resolution": "super_resolution",
    },
}


@dataclass(frozen=True)
class Preset:
    """A named setting: architecture, optimisation and the output reported by default."""

    method: str
    name: str
    description: str
    output: str
    network: Mapping[str, Any]
    fit: Mapping[str, Any]
    note: str = ""


@cache
def load_presets() -> dict[str, dict[str, Preset]]:
    """Every preset of ``presets.toml``: ``{method: {name: Preset}}`` (read once)."""
    data = tomllib.loads(PRESETS_PATH.read_text())
    return {
        method: {name: Preset(method=method, name=name, **values) for name, values in table.items()}
        for method, table in data.items()
    }


def get_preset(method: str, name: str) -> Preset:
    """A preset by name; unknown names list the method's presets."""
    presets = load_presets()[method]
    if name not in presets:
        raise KeyError(f"unknown {method} preset {name!r}; known: {', '.join(presets)}")
    return presets[name]


def default_preset(method: str, task: str, factor: int | None = None) -> str:
    """The preset for a task (super-resolution: by factor for DIP)."""
    if method == "dip" and task == "super_resolution":
        return f"sr_x{factor}"
    return DEFAULT_PRESETS[method][task]


def _typed(cls: type, values: Mapping[str, Any], what: str) -> Any:
    check_fields(cls, values, what)
    config = replace(
        cls(), **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    )
    for name, value in values.items():  # counts and sizes: a skip branch may be 0, no other
        least = 0 if "skip" in name else 1
        numbers = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, int) and not isinstance(v, bool) and v < least for v in numbers):
            raise ValueError(f"{what} option {name} = {value!r}: must be at least {least}")
    return config


_NETWORK_CONFIGS: dict[str, type] = {"skip": SkipConfig, "decoder": DecoderConfig}


def network_config(
    network: Mapping[str, Any], output_channels: int = 3
) -> tuple[SkipConfig | DecoderConfig, str]:
    """A preset's ``network`` table as its typed config and BatchNorm start; unknown kinds,
    options and values raise ``KeyError``/``TypeError``."""
    options = dict(network)
    kind = options.pop("kind")
    # How BatchNorm's scale starts: "ones" (today's PyTorch) or "uniform" (PyTorch <= 1.1).
    batchnorm_init = options.pop("batchnorm_init", "ones")
    if batchnorm_init not in BATCHNORM_INITS:
        known = ", ".join(BATCHNORM_INITS)
        raise KeyError(f"unknown batchnorm_init {batchnorm_init!r}; known: {known}")
    if kind not in _NETWORK_CONFIGS:
        raise KeyError(f"unknown network kind {kind!r}; known: {', '.join(_NETWORK_CONFIGS)}")
    options["output_channels"] = output_channels
    return _typed(_NETWORK_CONFIGS[kind], options, f"{kind} network"), batchnorm_init


def build_network(
    network: Mapping[str, Any], output_channels: int, generator: torch.Generator
) -> nn.Module:
    """A freshly initialised network from a preset's ``network`` table."""
    config, batchnorm_init = network_config(network, output_channels)
    net: nn.Module = SkipNet(config) if isinstance(config, SkipConfig) else DeepDecoder(config)
    reset_parameters(net, generator, batchnorm_init=batchnorm_init)
    return net


def resolve_setting(
    method: str,
    task: str,
    factor: int | None = None,
    *,
    preset: str | None = None,
    network: Mapping[str, Any] | None = None,
    fit_options: Mapping[str, Any] | None = None,
) -> tuple[Preset, dict[str, Any], FitConfig]:
    """The preset a call uses (named, or the task's default), its network table and its
    fit settings, with the call's overrides applied: a call that shortens the fit scales
    the preset's schedules with it (:func:`~benchmark.methods.fit.config.scaled_schedule`)."""
    chosen = get_preset(method, preset or default_preset(method, task, factor))
    net_options = {**chosen.network, **(network or {})}
    overrides = dict(fit_options or {})
    scaled = {name: new for name, (_, new) in scaled_schedule(chosen.fit, overrides).items()}
    fit = {**chosen.fit, **overrides, **scaled}
    return chosen, net_options, FitConfig.from_mapping(fit)


def check_setting(
    method: str,
    task: str,
    factor: int | None = None,
    *,
    preset: str | None = None,
    network: Mapping[str, Any] | None = None,
    fit_options: Mapping[str, Any] | None = None,
) -> None:
    """Raise ``KeyError``/``ValueError`` naming the first unknown preset, fit option or network
    option of a call, before any fit starts (a suite checks its entries when it loads)."""
    check_fields(FitConfig, fit_options or {}, "fit")
    _, net_options, _ = resolve_setting(
        method, task, factor, preset=preset, network=network, fit_options=fit_options
    )
    network_config(net_options)


def run_prior(
    method: str,
    observation: Observation,
    *,
    seed: int = 0,
    monitor_reference: np.ndarray | None = None,
    **options: Any,
) -> Restoration:
    """Fit DIP or DD to an observation under a preset, with any field overridden.

    The network's weights come from ``seed`` alone (fresh for every call), the input ``z``
    and its per-step perturbation from ``seed`` too. ``monitor_reference`` (the clean image)
    only feeds the PSNR curves and the ``oracle`` output. ``options`` are those of
    :func:`run_prior_many`: ``preset``, ``network``, ``fit_options``, ``output``,
    ``device``, ``progress``.

    Raises
    ------
    FitError
        If the loss stays NaN/Inf (see :func:`~benchmark.methods.fit.fit`).
    """
    references = None if monitor_reference is None else [monitor_reference]
    result = run_prior_many(
        method, [observation], seeds=[seed], monitor_references=references, **options
    )[0]
    if isinstance(result, FitError):
        raise result
    return result


def run_prior_many(
    method: str,
    observations: Sequence[Observation],
    *,
    seeds: Sequence[int],
    preset: str | None = None,
    network: Mapping[str, Any] | None = None,
    fit_options: Mapping[str, Any] | None = None,
    output: str | None = None,
    device: str | torch.device = "auto",
    monitor_references: Sequence[np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Restoration | FitError]:
    """:func:`run_prior` for several observations of one task and shape, fitted together
    (see :func:`~benchmark.methods.fit.fit_many`); each cell's network comes from its seed."""
    first = observations[0]
    chosen, net_options, cfg = resolve_setting(
        method, first.task, first.factor, preset=preset, network=network, fit_options=fit_options
    )
    channels = first.y.shape[2]
    nets = [build_network(net_options, channels, torch.Generator().manual_seed(s)) for s in seeds]
    results = fit_many(
        nets,
        observations,
        cfg,
        seeds=seeds,
        device=device,
        monitor_references=monitor_references,
        progress=progress,
    )
    scaled = scaled_schedule(chosen.fit, fit_options or {})
    for result in results:
        if isinstance(result, Restoration):
            result.default = output or chosen.output
            result.info["preset"] = chosen.name
            if scaled:  # what the table notes say: each scaled setting, preset -> this fit
                result.info["schedule_scaled"] = {name: list(pair) for name, pair in scaled.items()}
    return results


NETWORK_OUTPUTS = ("last", "ema", "es", "best_loss", "oracle")


class PriorNetwork(NetworkMethod):
    """DIP's and the Deep Decoder's contract with the runner: presets resolve each cell's
    setting, and cells of one shape that do not stop early are fitted together."""

    def __init__(self, method: str) -> None:
        self.method = method

    def setting(
        self, task: str, factor: int | None = None, **options: Any
    ) -> tuple[dict[str, Any], FitConfig]:
        _, network, cfg = resolve_setting(self.method, task, factor, **_chosen(options))
        return network, cfg

    def iterations(self, task: str, factor: int | None = None, **options: Any) -> int:
        return self.setting(task, factor, **options)[1].iterations

    def can_batch(self, task: str, factor: int | None = None, **options: Any) -> bool:
        return not self.setting(task, factor, **options)[1].stop_early

    def cpu_batch(
        self, task: str, factor: int | None, height: int, width: int, **options: Any
    ) -> int:
        """16 when a step is small enough for native convolutions (at most
        ``NATIVE_CONV_GFLOP``: CIFAR-10's 32x32 with DIP of 16-32 channels gains 2.5-3x, bit
        for bit), else 1 (larger steps keep both cores busy alone; batching them was slower)."""
        network, cfg = self.setting(task, factor, **options)
        net = build_network(network, 3, torch.Generator())
        native = cpu_convolution_backend(cfg, step_gflop_at(net, height, width)) == "native"
        return 16 if native else 1

    def fit_together(
        self, observations: Sequence[Observation], **arguments: Any
    ) -> list[Restoration | FitError]:
        return run_prior_many(self.method, observations, **arguments)

    def measure_step(
        self,
        observations: Sequence[Observation],
        targets: Sequence[np.ndarray],
        device: str,
        *,
        steps: int,
        warmup: int,
        min_seconds: float,
        clock: Callable[[], float],
        **options: Any,
    ) -> float:
        first = observations[0]
        network, cfg = self.setting(first.task, first.factor, **options)
        cfg = replace(cfg, iterations=warmup + steps, snapshots=(), check_every=warmup + steps)
        channels = first.y.shape[2]
        nets = [
            build_network(network, channels, torch.Generator().manual_seed(s))
            for s in range(len(observations))
        ]
        return time_steps(
            nets, observations, targets, cfg, device, warmup=warmup, steps=steps,
            min_seconds=min_seconds, clock=clock,
        )  # fmt: skip


def _chosen(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: options.get(k) for k in ("preset", "network", "fit_options")}


def _check(method: str) -> Callable[..., None]:
    def check(task: str, factor: int | None = None, **options: Any) -> None:
        check_known(options, {"preset", "network", "fit_options", "output"}, "option(s)")
        check_setting(method, task, factor, **_chosen(options))

    return check


def _capabilities(method: str, label: str) -> dict[str, Any]:
    """What DIP and DD declare to the registry."""
    return {
        "label": label,
        "outputs": NETWORK_OUTPUTS,
        "network": PriorNetwork(method),
        "check_options": _check(method),
    }


@register(
    "dip",
    tasks=("denoising", "inpainting", "super_resolution"),
    description="Deep Image Prior (Ulyanov et al., CVPR 2018)",
    **_capabilities("dip", "DIP"),
)
def dip(observation: Observation, *, seed: int = 0, **options: Any) -> Restoration:
    """Deep Image Prior; options as :func:`run_prior`."""
    return run_prior("dip", observation, seed=seed, **options)


@register(
    "dd",
    tasks=("denoising", "inpainting", "super_resolution"),
    description="Deep Decoder (Heckel & Hand, ICLR 2019)",
    **_capabilities("dd", "Deep Decoder"),
)
def dd(observation: Observation, *, seed: int = 0, **options: Any) -> Restoration:
    """Deep Decoder; options as :func:`run_prior`."""
    return run_prior("dd", observation, seed=seed, **options)
