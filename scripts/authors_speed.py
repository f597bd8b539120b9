"""DIP's step time, the authors' denoising notebook loop against dipbench's whole loop, timed
in turns in one process on the same network, image size and settings.

The authors' side imports their network (``models.get_net``, the notebook's ``skip`` with
128/128/4 channels and 5 scales) and input (``utils.common_utils.get_noise``) from a local
checkout of DmitryUlyanov/deep-image-prior (nothing of it is copied here) and runs the
denoising notebook's step as its closure does: the input perturbed by ``reg_noise_std``, the
forward pass, the EMA of the outputs, MSE, backward, the three PSNRs on host copies
(``psrn_noisy``, ``psrn_gt``, ``psrn_gt_sm``), the printed loss and the backtracking copy of
the weights, then Adam's step (``utils.common_utils.optimize``'s loop body). Ours is
:func:`benchmark.speed.our_runs`' whole loop under a fit's convolution kernels (trackers,
curves, checks), with freed memory kept for the next step as a run's fits keep it
(:mod:`benchmark.heap`; ``DIPBENCH_KEEP_HEAP=0`` hands it back, as their notebook does). Both on
the CPU at torch's thread count unless ``--threads``.

Example (the figure docs/speed.md quotes)::

    python scripts/authors_speed.py --dip ../deep-image-prior --size 128 --steps 5 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio

from benchmark.heap import heap_kept
from benchmark.speed import (
    fresh_networks,
    interleaved,
    noisy_cells,
    our_runs,
    settled,
    setup_for,
    with_heap,
)

sys.path.insert(0, str(Path(__file__).parent))
from authors_reference import commit_of, load_dip  # noqa: E402


def authors_loop(
    checkout: Path, clean: np.ndarray, noisy: np.ndarray, lr: float, reg_noise_std: float
) -> Callable[[int], None]:
    """``run(steps)``: the denoising notebook's steps on the authors' network."""
    dip = load_dip(checkout)
    get_net = sys.modules["models"].get_net
    torch.manual_seed(0)
    net = get_net(
        32, "skip", "reflection", skip_n33d=128, skip_n33u=128, skip_n11=4, num_scales=5,
        upsample_mode="bilinear",
    )  # fmt: skip
    height, width = noisy.shape[:2]
    net_input = dip.get_noise(32, "noise", (height, width)).detach()
    saved, noise = net_input.detach().clone(), net_input.detach().clone()
    img_noisy_np, img_np = noisy.transpose(2, 0, 1), clean.transpose(2, 0, 1)
    target = torch.from_numpy(np.ascontiguousarray(img_noisy_np))[None]
    mse = torch.nn.MSELoss()
    optimizer = torch.optim.Adam(list(net.parameters()), lr=lr)
    state: dict = {"avg": None, "last_psnr": 0.0, "i": 0}

    def closure() -> torch.Tensor:
        net_input = saved + noise.normal_() * reg_noise_std
        out = net(net_input)
        avg = state["avg"]
        state["avg"] = out.detach() if avg is None else avg * 0.99 + out.detach() * 0.01
        loss = mse(out, target)
        loss.backward()
        psnr_noisy = peak_signal_noise_ratio(img_noisy_np, out.detach().cpu().numpy()[0])
        peak_signal_noise_ratio(img_np, out.detach().cpu().numpy()[0])
        peak_signal_noise_ratio(img_np, state["avg"].detach().cpu().numpy()[0])
        state["printed"] = f"{loss.item():f}"  # the notebook prints the loss each step
        if state["i"] % 100:
            state["last_net"] = [x.detach().cpu() for x in net.parameters()]
            state["last_psnr"] = psnr_noisy
        state["i"] += 1
        return loss

    def run(steps: int) -> None:
        for _ in range(steps):
            optimizer.zero_grad()
            closure()
            optimizer.step()

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dip", type=Path, required=True, help="a deep-image-prior checkout")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per loop")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    setup = setup_for("dip")
    observations, cleans = noisy_cells(1, args.size)
    observation, clean = observations[0], cleans[0]
    theirs = authors_loop(args.dip, clean, observation.y, setup.fit.lr, setup.fit.reg_noise_std)
    loop = our_runs(setup, observation, clean, cpu)[1]
    ours = settled(loop, cpu, setup.fit, fresh_networks(setup, 1)[0], observation)
    # Ours keeps freed memory for the next step as a run's fits do (DIPBENCH_KEEP_HEAP=0: not);
    # theirs runs as a plain script does, handing it back at once.
    runs = {
        "authors' notebook loop": with_heap(theirs, keep=False),
        "dipbench whole loop": with_heap(ours, keep=heap_kept()),
    }
    medians = interleaved(runs, args.steps, args.repeats, cpu)  # dipbench speed's timing
    print(
        f"DIP denoising step, {args.size}x{args.size} RGB, cpu, {torch.get_num_threads()} "
        f"thread(s), torch {torch.__version__}; authors' commit {commit_of(args.dip)[:12]}; "
        f"median of {args.repeats} blocks of {args.steps} steps, in turns"
    )
    for name, seconds in medians.items():
        print(f"  {name:<24} {seconds * 1e3:8.1f} ms/step")
    ratio = medians["authors' notebook loop"] / medians["dipbench whole loop"]
    print(f"  dipbench {ratio:.2f}x as fast")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
