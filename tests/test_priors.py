"""DIP and Deep Decoder: architectures, the fitting loop, ES-WMV, backtracking, presets."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from benchmark import degradations as deg
from benchmark.cli import main
from benchmark.methods import run
from benchmark.methods.fit import FitConfig, FitError, fit, make_input, to_numpy
from benchmark.methods.fit.config import scaled_schedule
from benchmark.methods.fit.trackers import Trackers
from benchmark.methods.networks import (
    DecoderConfig,
    DeepDecoder,
    SkipConfig,
    SkipNet,
    count_parameters,
    padded_size,
)
from benchmark.methods.priors import build_network, get_preset, load_presets, resolve_setting
from benchmark.metrics import psnr

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


def _image(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """A smooth test image with some edges (odd sizes welcome)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    chans = [0.5 + 0.3 * np.sin(6 * xx + rng.uniform(0, 3)) * np.cos(4 * yy) for _ in range(c)]
    img = np.stack(chans, -1)
    img[h // 3 : h // 2, w // 4 : w // 2] = 0.9
    return img.astype(np.float32)


# --- architectures --------------------------------------------------------------------------


def test_dip_skip_parameter_counts() -> None:
    assert count_parameters(SkipNet(SkipConfig(output_channels=3))) == 2_217_831
    assert count_parameters(SkipNet(SkipConfig(output_channels=1))) == 2_217_573


@pytest.mark.parametrize("k", [64, 128, 50])
@pytest.mark.parametrize("out", [1, 3])
def test_deep_decoder_parameter_count(k: int, out: int) -> None:
    assert count_parameters(DeepDecoder(DecoderConfig(channels=k, output_channels=out))) == (
        6 * k * k + 12 * k + out * k
    )
    assert count_parameters(DeepDecoder(DecoderConfig(channels=128))) == 100_224
    assert count_parameters(DeepDecoder(DecoderConfig(channels=64))) == 25_536


def test_methods_command_prints_the_counts(capsys: pytest.CaptureFixture) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for count in ("2,217,831", "2,217,573", "100,224", "25,536"):
        assert count in out
    for name in ("inpainting_table1", "text_inpainting", "sr_x4", "sr_x8", "large_hole"):
        assert name in out


def test_every_preset_builds_and_names_valid_fit_options() -> None:
    for method, presets in load_presets().items():
        for preset in presets.values():
            net = build_network(preset.network, 3, torch.Generator().manual_seed(0))
            assert count_parameters(net) > 0
            FitConfig.from_mapping(preset.fit)
            assert preset.output in ("last", "ema", "es", "best_loss"), (method, preset.name)
    with pytest.raises(KeyError, match="known: denoising"):
        get_preset("dip", "denoise")
    with pytest.raises(KeyError, match="valid: backtrack_db"):
        FitConfig.from_mapping({"iteration": 10})


@pytest.mark.parametrize("kind", ["skip", "decoder"])
def test_batchnorm_scale_can_start_as_on_old_pytorch(kind: str) -> None:
    """PyTorch <= 1.1 (the DIP and DD codes' era) drew BatchNorm's scale from U(0, 1)."""
    network = {"kind": kind, **({"scales": 2} if kind == "skip" else {"channels": 8})}

    def scales(init: str) -> torch.Tensor:
        net = build_network(
            {**network, "batchnorm_init": init}, 3, torch.Generator().manual_seed(0)
        )
        return torch.cat(
            [m.weight.detach() for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        )

    assert torch.equal(scales("ones"), torch.ones_like(scales("ones")))
    old = scales("uniform")
    assert 0 <= float(old.min()) and float(old.max()) <= 1 and float(old.std()) > 0.2
    with pytest.raises(KeyError, match="unknown batchnorm_init 'zeros'; known: ones, uniform"):
        scales("zeros")


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    preset = get_preset("dip", "denoising")
    a, b, c = (
        build_network(preset.network, 3, torch.Generator().manual_seed(s)) for s in (1, 1, 2)
    )
    for pa, pb, _pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not all(
        torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    ("size", "multiple", "minimum", "expected"),
    [(37, 32, 64, 64), (100, 32, 64, 128), (128, 32, 64, 128), (5, 32, 32, 32)],
)
def test_padded_size(size: int, multiple: int, minimum: int, expected: int) -> None:
    assert padded_size(size, multiple, minimum) == expected


# --- any size, any task ---------------------------------------------------------------------

FEW = {"iterations": 4, "check_every": 2, "record_every": 2, "es_window": 2}


@pytest.mark.parametrize("method", ["dip", "dd"])
@pytest.mark.parametrize("channels", [1, 3])
def test_odd_sizes_round_trip(method: str, channels: int, device: str) -> None:
    clean = _image(37, 31, channels)
    for degraded in (
        deg.gaussian(clean, 25, np.random.default_rng(0)),
        deg.bernoulli(clean, 0.5, np.random.default_rng(0)),
        deg.downsample(clean, 4),  # target 36x28, low resolution 9x7
    ):
        obs = degraded.observation
        preset = "denoising" if obs.task != "super_resolution" or method == "dd" else "sr_x4"
        result = run(
            method,
            obs,
            seed=0,
            preset=preset,
            fit_options=FEW,
            device=device,
            monitor_reference=degraded.target,
        )
        for name, out in result.outputs.items():
            assert out.shape == degraded.target.shape, (obs.task, name)
            assert np.isfinite(out).all()
        assert result.info["device"].startswith(device)


def test_inpainting_loss_ignores_the_missing_pixels() -> None:
    clean = _image(40, 36, 3)
    obs = deg.bernoulli(clean, 0.5, np.random.default_rng(0)).observation
    missing = obs.mask[..., 0] == 0
    scribbled = obs.y.copy()
    scribbled[missing] = np.random.default_rng(1).random(scribbled[missing].shape)
    other = deg.Observation(scribbled, obs.physics, obs.params)
    options = {"fit_options": {"iterations": 6, "check_every": 3}, "device": "cpu"}
    a = run("dip", obs, seed=3, **options)
    b = run("dip", other, seed=3, **options)
    for key in a.outputs:
        np.testing.assert_array_equal(a.outputs[key], b.outputs[key])


def test_same_seed_same_result_on_cpu() -> None:
    obs = deg.gaussian(_image(33, 35, 3), 25, np.random.default_rng(0)).observation
    options = {"fit_options": {"iterations": 8, "check_every": 4}, "device": "cpu"}
    a, b = run("dip", obs, seed=5, **options), run("dip", obs, seed=5, **options)
    c = run("dip", obs, seed=6, **options)
    np.testing.assert_array_equal(a.outputs["last"], b.outputs["last"])
    np.testing.assert_array_equal(a.outputs["ema"], b.outputs["ema"])
    assert not np.array_equal(a.outputs["last"], c.outputs["last"])


# --- ES-WMV ---------------------------------------------------------------------------------


def test_es_wmv_finds_the_variance_minimum_and_stops_after_the_patience() -> None:
    """Outputs jitter around a fixed image with an amplitude that falls, then rises again."""
    cfg = FitConfig(iterations=400, es_window=10, es_patience=50, record_every=10)
    base = torch.rand(1, 1, 6, 5, generator=torch.Generator().manual_seed(0))
    trackers = Trackers(cfg, base, None)
    gen = torch.Generator().manual_seed(1)
    turn = 150
    outputs = []
    for it in range(1, cfg.iterations + 1):
        amplitude = 0.01 + 0.2 * abs(it - turn) / turn
        out = base + amplitude * torch.randn(base.shape, generator=gen)
        outputs.append(out)
        trackers.update(it, out, torch.tensor([1.0]))
        if it >= cfg.es_window:  # the running sums equal the brute-force window variance
            window = torch.cat(outputs[-cfg.es_window :])
            brute = (window - window.mean(0)).square().mean()
            assert float(trackers.es.current_var) == pytest.approx(float(brute), rel=1e-4, abs=1e-9)
    es_it = int(trackers.es.iteration)
    assert abs(es_it - turn) <= cfg.es_window
    assert bool(trackers.es.stopped)
    assert int(trackers.es.stop_iteration) == es_it + cfg.es_patience
    torch.testing.assert_close(trackers.es.image, outputs[es_it - 1])


# --- backtracking and NaN -------------------------------------------------------------------


class Sabotaged(nn.Module):
    """A tiny conv net that corrupts itself (weights or output) at chosen calls."""

    def __init__(self, corrupt_at: int = -1, nan_from: int = -1, nan_until: int = -1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 1))
        self.input_channels, self.input_downscale, self.multiple, self.minimum = 4, 1, 1, 1
        self.calls = 0
        self.corrupt_at, self.nan_from, self.nan_until = corrupt_at, nan_from, nan_until

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.corrupt_at:
            with torch.no_grad():
                for p in self.parameters():
                    p.mul_(-40.0).add_(3.0)
        out = torch.sigmoid(self.body(z))
        if self.nan_from <= self.calls <= self.nan_until:
            out = out * math.nan
        return out


def seeded(net: nn.Module) -> nn.Module:
    torch.nn.init.normal_(net.body[0].weight, 0, 0.1, generator=torch.Generator().manual_seed(0))
    return net


def _weights_at_check_points(
    net: nn.Module,
) -> tuple[dict[int, list[torch.Tensor]], Callable[[int, int], None]]:
    """A progress callback that keeps a copy of ``net``'s weights at every check point."""
    states: dict[int, list[torch.Tensor]] = {}

    def remember(done: int, total: int) -> None:
        states[done] = [p.detach().clone() for p in net.parameters()]

    return states, remember


def test_last_is_the_final_weights_at_the_last_perturbed_input() -> None:
    """The authors' read-out: ``net(net_input)`` after the loop, ``net_input`` still the last
    step's perturbed input (issue 26: at the clean input, DIP denoising loses about 1 dB);
    the best-loss output of a final best step is the Deep Decoder code's: at the clean input."""
    clean = _image(24, 20, 3)
    obs = deg.gaussian(clean, 10, np.random.default_rng(0)).observation
    net = seeded(Sabotaged())
    cfg = FitConfig(iterations=30, lr=0.01, reg_noise_std=0.05, backtrack_db=math.inf)
    seed = 3
    result = fit(net, obs, cfg, seed=seed, device="cpu")  # a lone cell trains ``net`` in place
    z = make_input(cfg.input, 4, (24, 20), cfg.input_scale, torch.Generator().manual_seed(seed))
    noise = torch.Generator().manual_seed(seed + 1)  # the fit's stream: one draw per step
    perturbation = torch.empty_like(z)
    for _ in range(cfg.iterations):
        perturbation.normal_(0.0, cfg.reg_noise_std, generator=noise)
    with torch.no_grad():
        at_last_input, at_clean_input = to_numpy(net(z + perturbation)), to_numpy(net(z))
    np.testing.assert_allclose(result.outputs["last"], at_last_input, atol=1e-6)
    assert np.abs(at_last_input - at_clean_input).max() > 1e-3  # the two read-outs differ


def test_backtracking_restores_the_last_good_weights() -> None:
    clean = _image(24, 20, 3)
    obs = deg.gaussian(clean, 10, np.random.default_rng(0)).observation
    net = seeded(Sabotaged(corrupt_at=40))
    states, remember = _weights_at_check_points(net)
    cfg = FitConfig(iterations=100, lr=0.01, check_every=25, backtrack_db=5.0)
    result = fit(net, obs, cfg, device="cpu", progress=remember)
    assert result.info["restores"] == 1
    for restored, good in zip(states[50], states[25], strict=True):  # weights of step 25 back
        assert torch.equal(restored, good)
    # Without backtracking the corrupted weights do not recover within the budget.
    unguarded = fit(
        seeded(Sabotaged(corrupt_at=40)), obs, replace(cfg, backtrack_db=math.inf), device="cpu"
    )
    assert unguarded.info["restores"] == 0
    guarded_psnr = psnr(result.outputs["last"], obs.y)
    assert guarded_psnr > psnr(unguarded.outputs["last"], obs.y) + 3


def test_last_is_the_final_weights_output_even_when_the_last_steps_diverge() -> None:
    """Weights wrecked 3 steps before the end: the final check restores those of step 75, and
    `last` is the restored network's output, not the diverged iterate of step 100."""
    clean = _image(24, 20, 3)
    obs = deg.gaussian(clean, 10, np.random.default_rng(0)).observation
    net = seeded(Sabotaged(corrupt_at=97))
    states, remember = _weights_at_check_points(net)
    cfg = FitConfig(iterations=100, lr=0.01, check_every=25, snapshots=(96, 100))
    result = fit(net, obs, cfg, seed=0, device="cpu", monitor_reference=clean, progress=remember)
    assert result.info["restores"] == 1
    for final, good in zip(net.parameters(), states[75], strict=True):
        assert torch.equal(final, good)
    z = make_input("noise", 4, (24, 20), cfg.input_scale, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = to_numpy(torch.sigmoid(net.body(z)))
    np.testing.assert_allclose(result.outputs["last"], expected, atol=1e-6)
    diverged = psnr(result.snapshots[100], clean)
    assert psnr(result.outputs["last"], clean) > diverged + 5
    assert psnr(result.outputs["last"], clean) > psnr(result.snapshots[96], clean) - 1
    # The oracle covers every tracked output, the final one included.
    for name in ("last", "ema", "es", "best_loss"):
        assert psnr(result.outputs["oracle"], clean) >= psnr(result.outputs[name], clean) - 1e-6


def test_best_loss_keeps_the_output_of_the_weights_after_the_best_step() -> None:
    """The Deep Decoder's rule: a new best only below 1/1.005 of the best so far, and the
    network kept is the one after that step, whose output is the next step's."""
    cfg = FitConfig(iterations=5, es_window=2)
    base = torch.zeros(1, 1, 3, 3)
    trackers = Trackers(cfg, base, None)
    losses = [1.0, 0.999, 0.5, 0.6, 0.4999]  # 0.999 and 0.4999 are not 0.5% better
    for it, loss in enumerate(losses, start=1):
        trackers.update(it, base + it, torch.tensor([loss]))
    trackers.finish(5, base + 100, base + 200)
    assert int(trackers.best_loss.iteration) == 3 and float(trackers.best_loss.loss) == 0.5
    torch.testing.assert_close(trackers.best_loss.image, base + 4)  # the output after step 3
    trackers = Trackers(cfg, base, None)
    for it, loss in enumerate([1.0, 0.9], start=1):
        trackers.update(it, base + it, torch.tensor([loss]))
    trackers.finish(2, base + 100, base + 200)
    # The final weights' output at the clean input, where the DD code evaluates its best net.
    torch.testing.assert_close(trackers.best_loss.image, base + 200)


def test_a_transient_nan_is_survived_and_a_persistent_one_fails() -> None:
    obs = deg.gaussian(_image(24, 20, 3), 10, np.random.default_rng(0)).observation
    cfg = FitConfig(iterations=60, check_every=10)
    survived = fit(seeded(Sabotaged(nan_from=15, nan_until=15)), obs, cfg, device="cpu")
    assert survived.info["restores"] == 1
    assert all(np.isfinite(out).all() for out in survived.outputs.values())
    with pytest.raises(FitError, match="NaN/Inf"):
        fit(
            seeded(Sabotaged(nan_from=5, nan_until=10**9)),
            obs,
            FitConfig(iterations=500, check_every=10, max_restores=3),
            device="cpu",
        )


def test_curves_and_snapshots_are_recorded() -> None:
    clean = _image(32, 32, 1)
    obs = deg.gaussian(clean, 25, np.random.default_rng(0)).observation
    result = run(
        "dd",
        obs,
        seed=0,
        device="cpu",
        monitor_reference=clean,
        fit_options={"iterations": 30, "record_every": 5, "snapshots": [10, 30], "es_window": 5},
    )
    assert list(result.curves["iteration"]) == [5, 10, 15, 20, 25, 30]
    assert np.isfinite(result.curves["psnr_last"]).all()
    assert sorted(result.snapshots) == [10, 30]
    # The snapshot is iterate 30; `last` comes from the weights after step 30 (one Adam step on).
    assert result.snapshots[30].shape == result.outputs["last"].shape
    assert "oracle" in result.outputs and result.info["oracle_iteration"] >= 1
    assert result.default == "best_loss"


# --- schedules scale with the budget ---------------------------------------------------------


PRESET_FIT = {"iterations": 40000, "reg_noise_decay_every": 500, "check_every": 50}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # A fortieth of the length: every setting counted in iterations, a fortieth too.
        (
            {"iterations": 1000},
            {"reg_noise_decay_every": 12, "check_every": 1, "es_window": 2, "es_patience": 25},
        ),
        (
            {"iterations": 20000},
            {"reg_noise_decay_every": 250, "check_every": 25, "es_window": 50, "es_patience": 500},
        ),
        # A setting the call names is the call's; a fit as long or longer keeps the preset's.
        (
            {"iterations": 20000, "es_patience": 7},
            {"reg_noise_decay_every": 250, "check_every": 25, "es_window": 50},
        ),
        ({"iterations": 40000}, {}),
        ({"iterations": 80000}, {}),
        ({}, {}),
    ],
)
def test_a_shortened_fit_scales_its_schedules(overrides: dict, expected: dict) -> None:
    scaled = scaled_schedule(PRESET_FIT, overrides)
    assert {name: new for name, (_, new) in scaled.items()} == expected
    assert all(
        old == PRESET_FIT.get(name, getattr(FitConfig(), name)) for name, (old, _) in scaled.items()
    )


def test_a_shortened_fit_counts_its_steps_by_their_learning_rate() -> None:
    # Quick Table 1: 1 000 steps at LR 0.01 against the preset's 11 000 at 0.001 cover 0.91
    # of its optimisation, not 0.09: ES-WMV keeps 91 / 909, not 9 / 91.
    table1 = {"iterations": 11000, "lr": 0.001, "check_every": 50}
    scaled = scaled_schedule(table1, {"iterations": 1000, "lr": 0.01})
    assert scaled == {"check_every": (50, 45), "es_window": (100, 91), "es_patience": (1000, 909)}
    # DD's inpainting: 1 000 steps at 0.01 against 40 000 at 0.0025 is a tenth.
    dd = {"iterations": 40000, "lr": 0.0025, "reg_noise_decay_every": 500}
    assert scaled_schedule(dd, {"iterations": 1000, "lr": 0.01})["reg_noise_decay_every"] == (
        500,
        50,
    )
    # A higher LR that makes up for fewer steps is not a shortened fit.
    assert scaled_schedule(table1, {"iterations": 1100, "lr": 0.01}) == {}
    # A fit of the preset's steps at a lower LR keeps the preset's schedules: ES-WMV's
    # window measures how fast the output moves at each step, not a budget.
    assert scaled_schedule(table1, {"lr": 0.0001}) == {}
    assert scaled_schedule(table1, {"iterations": 11000, "lr": 0.0001}) == {}


def test_check_every_scales_only_where_a_preset_sets_it() -> None:
    # The denoising notebook compares every step; our 25 is a check interval, not a schedule.
    scaled = scaled_schedule({"iterations": 3000}, {"iterations": 1000})
    assert scaled == {"es_window": (100, 33), "es_patience": (1000, 333)}


def test_every_preset_resolves_its_shortened_schedule() -> None:
    presets = [p for table in load_presets().values() for p in table.values()]
    for preset in presets:
        iterations = preset.fit.get("iterations", FitConfig().iterations)
        _, _, cfg = resolve_setting(
            preset.method, "denoising", preset=preset.name, fit_options={"iterations": 10}
        )
        ratio = 10 / iterations
        assert cfg.es_patience == max(1, round(1000 * ratio))
        decay = preset.fit.get("reg_noise_decay_every", 0)
        assert cfg.reg_noise_decay_every == (max(1, round(decay * ratio)) if decay else 0)
