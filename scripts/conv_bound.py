"""How fast a DIP step could be on this CPU: each convolution of the network timed alone.

Every ``nn.Conv2d`` of the network a fit builds (the method's denoising preset, or a suite's
entry) is timed on its own, forward and backward as a fit runs it (the first layer, whose
input is the fixed noise, without an input gradient), in each kernel family and memory
format torch offers on the CPU: oneDNN and PyTorch's native kernels, NCHW and channels_last.
The sum of every layer's fastest time bounds what a float32 step can take with these kernels,
before batch norm, activations, upsampling, the loss and Adam cost anything; a second bound
divides the step's convolution FLOP by the machine's 3x3 throughput (``dipbench speed``'s).

Example (the figures docs/speed.md quotes for issue 39)::

    python scripts/conv_bound.py --size 128
    python scripts/conv_bound.py --size 32 --suite cifar10-noise
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.methods.fit import step_gflop
from benchmark.speed import convolution_gflops, fresh_networks, noisy_cells, setup_for

KERNELS = (
    ("oneDNN", torch.contiguous_format),
    ("oneDNN", torch.channels_last),
    ("native", torch.contiguous_format),
    ("native", torch.channels_last),
)


def conv_layers(net: nn.Module, size: int) -> list[tuple[tuple[int, ...], nn.Conv2d]]:
    """Each convolution of ``net`` with the shape of its input at ``size`` x ``size``."""
    found: list[tuple[tuple[int, ...], nn.Conv2d]] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: found.append((tuple(i[0].shape), m)))
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        net(torch.rand(1, net.input_channels, size, size))
    for hook in hooks:
        hook.remove()
    return found


def median_seconds(run: Callable[[], None], repeats: int) -> float:
    run()
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def layer_seconds(
    shape: tuple[int, ...], conv: nn.Conv2d, input_grad: bool, repeats: int
) -> list[float]:
    """Forward and backward of one layer alone, in each of :data:`KERNELS`."""
    seconds = []
    for family, layout in KERNELS:
        x = torch.randn(shape).to(memory_format=layout).requires_grad_(input_grad)
        weight = torch.randn(conv.weight.shape).to(memory_format=layout).requires_grad_()
        bias = torch.randn(conv.out_channels).requires_grad_() if conv.bias is not None else None

        def run(x=x, weight=weight, bias=bias, onednn=family == "oneDNN") -> None:
            with torch.backends.mkldnn.flags(enabled=onednn):
                y = F.conv2d(x, weight, bias, conv.stride, conv.padding, 1, conv.groups)
                y.backward(torch.ones_like(y))

        seconds.append(median_seconds(run, repeats))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--suite", help="take the network from this suite's dip entry")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup = setup_for("dip", suite=args.suite, profile=args.profile)
    net = fresh_networks(setup, 1)[0]
    totals = [0.0] * len(KERNELS)
    fastest = 0.0
    layouts = {torch.contiguous_format: "NCHW", torch.channels_last: "NHWC"}
    header = " ".join(f"{family} {layouts[layout]:>5}" for family, layout in KERNELS)
    print(f"{'input':>20} {'weight':>18} stride  {header}  (ms, forward + backward)")
    for index, (shape, conv) in enumerate(conv_layers(net, args.size)):
        seconds = layer_seconds(shape, conv, input_grad=index > 0, repeats=args.repeats)
        totals = [t + s for t, s in zip(totals, seconds, strict=True)]
        fastest += min(seconds)
        cells = " ".join(f"{1e3 * s:12.2f}" for s in seconds)
        print(f"{shape!s:>20} {tuple(conv.weight.shape)!s:>18} {conv.stride[0]:>6}  {cells}")
    observation = noisy_cells(1, args.size)[0][0]
    gflop = step_gflop(net, observation)
    throughput = convolution_gflops(torch.device("cpu"))
    print("sum (ms):", "  ".join(f"{1e3 * t:.1f}" for t in totals))
    print(f"sum of every layer's fastest: {1e3 * fastest:.1f} ms a step")
    print(
        f"a step's convolutions: {gflop:.2f} GFLOP; at this machine's 3x3 throughput "
        f"({throughput:.0f} GFLOP/s): {1e3 * gflop / throughput:.1f} ms"
    )


if __name__ == "__main__":
    main()
