"""The authors' own code at a profile's settings, for the quick tables' "authors' code" rows.

Given local checkouts of DmitryUlyanov/deep-image-prior and reinhardh/supplement_deep_decoder
and, for ZS-N2N, a public copy of its notebook's code (Li-Tong-621/ZS-N2N, whose ``util.py``
holds the notebook's network, downsampler, loss and training step; none is copied into this
repository: each is imported from the path given), each chosen
cell of a suite is rebuilt exactly as dipbench builds it (same image, crop, degradation and
degradation seed, so the same observation), fitted with the authors' network and optimisation
at the cell's settings (the profile's network widths, iterations, learning rate, input noise,
with every schedule scaled as dipbench scales it), and scored under the suite's protocol.

- DIP: ``models.skip`` (or ``get_net``) builds the network, ``utils.common_utils.get_noise``
  the input and ``utils.common_utils.optimize`` runs Adam over the notebooks' closure: the
  input perturbed by ``reg_noise_std`` each step, the loss through the task's operator (the
  mask; DIP's ``models.downsampler.Downsampler`` with the Lanczos-2 kernel for
  super-resolution), the EMA with weight 0.99, the backtracking check of the cell's preset;
  ``last`` is the final network at the last perturbed input (the notebooks' ``net(net_input)``).
- Deep Decoder: ``include.decoder.decodernw`` and ``include.fit.fit`` with ``find_best``; its
  output is the best-loss network at the clean input (``best_loss``). The DD code has no
  super-resolution loop (its ``fit`` compares the observation with the clean image's shape),
  so super-resolution cells run DIP only.
- ZS-N2N: ``util.network``, ``util.train_one`` (the notebook's loss and Adam step) and
  ``util.denoise`` (``clamp(y - f(y), 0, 1)``), with Adam and ``StepLR`` at the cell's settings
  (the copy's own ``train`` fixes CUDA and 2000 steps halved at 1500, so it is not called).

Each row records the authors' commit, the settings, the seed, the device, torch's version and
the thread count. A fit whose rows ``--out`` has already is skipped (``--again`` re-runs it and
replaces its rows); other rows are kept, and each fit's rows are written as it finishes.

Example (about 10 minutes per DIP fit of 1000 steps at 96x96 on one core here)::

    python scripts/authors_reference.py --dip ../deep-image-prior \\
        --dd ../supplement_deep_decoder --suite deep-decoder --profile quick \\
        --images astronaut,f16 --methods dip,dd --seeds 0,1,2 \\
        --out benchmark/data/authors_reference_quick.csv
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import io
import json
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from tqdm import tqdm

from benchmark.methods.zsn2n import settings_from
from benchmark.metrics import get_protocol
from benchmark.runner.cell import prepare
from benchmark.runner.planning import network_setting
from benchmark.suites import Cell, load_suite
from benchmark.tasks import get_task

COLUMNS = [
    "suite", "profile", "dataset", "image", "crop", "degradation", "level", "method",
    "output", "seed", "psnr", "ssim", "observation_key", "settings", "code", "commit",
    "device", "torch", "threads", "seconds", "date",
]  # fmt: skip

FIT_SETTINGS = (
    "iterations", "lr", "reg_noise_std", "reg_noise_decay", "reg_noise_decay_every", "input",
    "backtrack_db", "check_every",
)  # fmt: skip

CODE = {
    "dip": "DmitryUlyanov/deep-image-prior",
    "dd": "reinhardh/supplement_deep_decoder",
    "zsn2n": "Li-Tong-621/ZS-N2N (util.py: the notebook's code)",
}

EMA_WEIGHT = 0.99  # the denoising notebook's exp_weight


def commit_of(checkout: Path) -> str:
    """The checkout's commit (``git rev-parse HEAD``), or "unknown" for a plain folder."""
    try:
        done = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


def _stub(name: str) -> None:
    """An empty module for an import the authors' plotting helpers make and the fits never use
    (torchvision, whose CPU build is not installed here)."""
    if importlib.util.find_spec(name) is None and name not in sys.modules:
        sys.modules[name] = types.ModuleType(name)


def load_dip(checkout: Path) -> types.SimpleNamespace:
    """DIP's ``skip``, ``Downsampler``, ``get_noise`` and ``optimize`` from a checkout."""
    _stub("torchvision")
    sys.path.insert(0, str(checkout))
    models = importlib.import_module("models")
    common = importlib.import_module("utils.common_utils")
    downsampler = importlib.import_module("models.downsampler")
    return types.SimpleNamespace(
        skip=models.skip,
        Downsampler=downsampler.Downsampler,
        get_noise=common.get_noise,
        optimize=common.optimize,
    )


def load_dd(checkout: Path) -> types.SimpleNamespace:
    """The Deep Decoder's ``decodernw`` and ``fit`` from a checkout, without its package
    ``__init__`` (which imports the plotting and wavelet helpers too)."""
    package = types.ModuleType("include")
    package.__path__ = [str(checkout / "include")]
    sys.modules["include"] = package
    sys.modules["include.helpers"] = types.ModuleType("include.helpers")  # plotting only
    decoder = importlib.import_module("include.decoder")
    fit = importlib.import_module("include.fit")
    fit.dtype = torch.FloatTensor  # the module targets CUDA; set per device in run_dd
    return types.SimpleNamespace(decodernw=decoder.decodernw, fit=fit)


def load_zsn2n(checkout: Path) -> types.ModuleType:
    """The ZS-N2N notebook's ``util.py`` from a checkout of a copy of it (its plotting and
    image-loading imports stubbed where they are not installed)."""
    _stub("torchvision")
    path = checkout / "util.py"
    spec = importlib.util.spec_from_file_location("zsn2n_authors_util", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_zsn2n(
    code: types.ModuleType,
    observation: Any,
    network: dict[str, Any],
    fit: Any,
    seed: int,
    device: str,
) -> dict[str, np.ndarray]:
    """One ZS-N2N fit by the notebook's functions; returns ``last``."""
    torch.manual_seed(seed)
    noisy = _to_torch(observation.y, device)
    model = code.network(noisy.shape[1], chan_embed=network["channels"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=fit.lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, fit.decay_every, gamma=fit.decay)
    for _ in range(fit.iterations):
        code.train_one(model, optimizer, noisy)
        schedule.step()
    return {"last": _to_numpy(code.denoise(model, noisy))}


@contextlib.contextmanager
def steps_bar(total: int, label: str) -> Iterator[tqdm]:
    """A bar with an ETA over an authors' loop, which prints nothing readable (the DD and DIP
    loops print to the stdout this script silences): each optimizer step of the fit moves it,
    counted by a global step hook that reads nothing the fit computes. On a terminal the bar
    moves each second; in a log it writes a line every 60 s."""
    bar = tqdm(
        total=total, desc=label, unit="step", file=sys.stderr,
        mininterval=1 if sys.stderr.isatty() else 60,
    )  # fmt: skip
    handle = register_optimizer_step_post_hook(lambda *_: bar.update(1))
    try:
        yield bar
    finally:
        handle.remove()
        bar.close()


def _to_torch(image: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))[None]).to(device)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()[0].transpose(1, 2, 0).astype(np.float32)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(torch.mean((a - b) ** 2)))


def run_dip(
    dip: types.SimpleNamespace,
    observation: Any,
    network: dict[str, Any],
    fit: Any,
    seed: int,
    device: str,
) -> dict[str, np.ndarray]:
    """One DIP fit as the notebooks run it; returns ``last`` and ``ema``."""
    torch.manual_seed(seed)
    channels = observation.y.shape[2]
    height, width = observation.y.shape[:2]
    if observation.factor:
        height, width = height * observation.factor, width * observation.factor
    scales = network.get("scales", 5)

    def per_scale(value: Any) -> list[int]:
        return list(value) if isinstance(value, list | tuple) else [value] * scales

    input_channels = network.get("input_channels", 2 if fit.input == "meshgrid" else 32)
    net = dip.skip(
        input_channels, channels,
        num_channels_down=per_scale(network.get("channels_down", 128)),
        num_channels_up=per_scale(network.get("channels_up", 128)),
        num_channels_skip=per_scale(network.get("channels_skip", 4)),
        upsample_mode=network.get("upsample", "bilinear"),
        need_sigmoid=True, need_bias=True, pad="reflection", act_fun="LeakyReLU",
    ).to(device)  # fmt: skip
    net_input = dip.get_noise(input_channels, fit.input, (height, width)).to(device).detach()
    saved, noise = net_input.clone(), net_input.clone()
    target = _to_torch(observation.y, device)
    if observation.mask is not None:
        mask = _to_torch(observation.mask, device)

        def operator(x: torch.Tensor) -> torch.Tensor:
            return x * mask

        target = target * mask
    elif observation.factor:
        operator = dip.Downsampler(
            n_planes=channels, factor=observation.factor, kernel_type="lanczos2", phase=0.5,
            preserve_size=True,
        ).to(device)  # fmt: skip
    else:

        def operator(x: torch.Tensor) -> torch.Tensor:
            return x

    mse = torch.nn.MSELoss()
    state: dict[str, Any] = {"i": 0, "ema": None, "input": net_input, "last_psnr": None}
    state["good"] = [p.detach().clone() for p in net.parameters()]

    def closure() -> torch.Tensor:
        state["i"] += 1
        if fit.reg_noise_std > 0:
            state["input"] = saved + noise.normal_() * fit.reg_noise_std
        out = net(state["input"])
        ema = state["ema"]
        state["ema"] = (
            out.detach() if ema is None else ema * EMA_WEIGHT + out.detach() * (1 - EMA_WEIGHT)
        )
        observed = operator(out)
        loss = mse(observed, target)
        loss.backward()
        if np.isfinite(fit.backtrack_db) and state["i"] % fit.check_every == 0:
            psnr_obs = _psnr(observed.detach(), target)
            if state["last_psnr"] is not None and psnr_obs < state["last_psnr"] - fit.backtrack_db:
                for param, good in zip(net.parameters(), state["good"], strict=True):
                    param.data.copy_(good)
                return loss * 0
            state["good"] = [p.detach().clone() for p in net.parameters()]
            state["last_psnr"] = psnr_obs
        return loss

    with contextlib.redirect_stdout(io.StringIO()):
        dip.optimize("adam", list(net.parameters()), closure, fit.lr, fit.iterations)
    with torch.no_grad():
        last = net(state["input"])
    return {"last": _to_numpy(last), "ema": _to_numpy(state["ema"])}


def run_dd(
    dd: types.SimpleNamespace,
    observation: Any,
    network: dict[str, Any],
    fit: Any,
    seed: int,
    device: str,
) -> dict[str, np.ndarray]:
    """One Deep Decoder fit by the DD code's ``fit``; returns ``best_loss``."""
    if observation.factor:
        raise ValueError("the Deep Decoder's code has no super-resolution loop")
    torch.manual_seed(seed)
    dd.fit.dtype = torch.cuda.FloatTensor if device.startswith("cuda") else torch.FloatTensor
    channels = [network.get("channels", 128)] * (network.get("layers", 6) - 1)
    net = dd.decodernw(observation.y.shape[2], num_channels_up=channels, upsample_first=True)
    net = net.to(device)
    noisy = _to_torch(observation.y, device)
    mask = None if observation.mask is None else _to_torch(observation.mask, device)
    decay_every = fit.reg_noise_decay_every if fit.reg_noise_decay != 1.0 else 100_000
    with contextlib.redirect_stdout(io.StringIO()):
        _, _, net_input, best = dd.fit.fit(
            num_channels=channels, reg_noise_std=fit.reg_noise_std,
            reg_noise_decayevery=decay_every, num_iter=fit.iterations, LR=fit.lr,
            img_noisy_var=noisy, net=net, img_clean_var=noisy, mask_var=mask, find_best=True,
        )  # fmt: skip
    with torch.no_grad():
        return {"best_loss": _to_numpy(best(net_input.to(device)))}


def chosen_cells(args: argparse.Namespace) -> list[Cell]:
    suite = load_suite(
        args.suite,
        args.profile,
        images_subset=args.images.split(",") if args.images else None,
        methods_subset=args.methods.split(","),
    )
    levels = {float(v) for v in args.levels.split(",")} if args.levels else None
    return [
        c
        for c in suite.cells()
        if c.method in ("dip", "dd", "zsn2n") and (levels is None or float(c.level) in levels)
    ]


def settings_of(cell: Cell) -> tuple[dict[str, Any], Any, str]:
    """The cell's network table, fit settings and both as one JSON string (its provenance)."""
    if cell.method == "zsn2n":
        fit = settings_from(dict(cell.method_options))
        network = {"channels": fit.channels}
        return network, fit, json.dumps({"settings": asdict(fit)}, sort_keys=True)
    network, fit = network_setting(cell)
    text = json.dumps(
        {"network": network, "fit": {k: getattr(fit, k) for k in FIT_SETTINGS}}, sort_keys=True
    )
    return network, fit, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dip", type=Path, help="checkout of DmitryUlyanov/deep-image-prior")
    parser.add_argument("--dd", type=Path, help="checkout of reinhardh/supplement_deep_decoder")
    parser.add_argument("--zsn2n", type=Path, help="checkout of a copy of ZS-N2N's notebook code")
    parser.add_argument("--suite", required=True)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--images", help="comma-separated image names (default: every image)")
    parser.add_argument("--methods", default="dip,dd", help="suite method keys (default dip,dd)")
    parser.add_argument("--levels", help="comma-separated degradation levels (default: every one)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated torch seeds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="CSV to add the rows to")
    parser.add_argument(
        "--again", action="store_true", help="re-run fits whose rows --out has already"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = chosen_cells(args)
    needs = {"dip": args.dip, "dd": args.dd, "zsn2n": args.zsn2n}
    for method in {c.method for c in cells}:
        if needs[method] is None or not (needs[method] / ".").is_dir():
            parser.error(f"--{method} must name a local checkout of the authors' repository")
    loaded = {
        "dip": load_dip(args.dip) if args.dip else None,
        "dd": load_dd(args.dd) if args.dd else None,
        "zsn2n": load_zsn2n(args.zsn2n) if args.zsn2n else None,
    }
    runners = {"dip": run_dip, "dd": run_dd, "zsn2n": run_zsn2n}
    done = _finished(args.out)
    rows = []
    for cell in cells:
        if cell.method == "dd" and get_task(cell.task).factor(cell.level):
            print(f"skip {cell.method_key} {cell.image}: no super-resolution in the DD code")
            continue
        observation, target = prepare(cell)
        network, fit, settings = settings_of(cell)
        protocol = get_protocol(cell.protocol)
        for seed in seeds:
            if not args.again and (cell.suite, cell.image, cell.degradation, cell.level,
                                   cell.method_key, seed) in done:  # fmt: skip
                continue
            start = time.perf_counter()
            label = f"{cell.image} {cell.method_key} seed {seed}"
            with steps_bar(fit.iterations, label):
                outputs = runners[cell.method](
                    loaded[cell.method], observation, network, fit, seed, args.device
                )
            seconds = time.perf_counter() - start
            for output, image in outputs.items():
                score = protocol.score(np.clip(image, 0, 1), target)
                rows.append(
                    {
                        "suite": cell.suite, "profile": cell.profile, "dataset": cell.dataset,
                        "image": cell.image, "crop": cell.crop, "degradation": cell.degradation,
                        "level": cell.level, "method": cell.method_key, "output": output,
                        "seed": seed, "psnr": round(score["psnr"], 4),
                        "ssim": round(score["ssim"], 5), "observation_key": cell.observation_key,
                        "settings": settings,
                        "code": CODE[cell.method],
                        "commit": commit_of(needs[cell.method]), "device": args.device,
                        "torch": torch.__version__, "threads": args.threads,
                        "seconds": round(seconds, 1),
                        "date": datetime.date.today().isoformat(),
                    }
                )  # fmt: skip
                print(
                    f"{cell.suite} {cell.image} {cell.degradation} {cell.level:g} "
                    f"{cell.method_key} {output} seed {seed}: {score['psnr']:.2f} dB "
                    f"({seconds:.0f} s)",
                    flush=True,
                )
            _merge_into(args.out, rows[-len(outputs) :])
    return 0


def _finished(out: Path) -> set[tuple]:
    """The (suite, image, degradation, level, method, seed) fits ``out`` holds already."""
    if not out.is_file():
        return set()
    rows = pd.read_csv(out)
    columns = ["suite", "image", "degradation", "level", "method", "seed"]
    return {tuple(r) for r in rows[columns].itertuples(index=False)}


def _merge_into(out: Path, rows: list[dict[str, Any]]) -> None:
    """Add rows to ``out``, replacing rows of the same cell, output and seed (written after each
    fit, so an interrupted run keeps what it finished)."""
    new = pd.DataFrame(rows, columns=COLUMNS)
    identity = ["suite", "profile", "dataset", "image", "degradation", "level", "method",
                "output", "seed"]  # fmt: skip
    if out.exists():
        old = pd.read_csv(out)
        keep = ~old.set_index(identity).index.isin(new.set_index(identity).index)
        new = pd.concat([old[keep], new], ignore_index=True)
    new = new.sort_values(identity, kind="stable")
    tmp = out.with_suffix(".tmp")
    new.to_csv(tmp, index=False)
    tmp.replace(out)


if __name__ == "__main__":
    sys.exit(main())
