"""The memory guard: a fit that would not fit is refused before it takes any memory, with
the largest image that would; the estimate it uses is measured against a real fit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark import heap
from benchmark.cli import main
from benchmark.heap import KEPT_HEAP_FACTOR, kept_heap
from benchmark.methods.fit.devices import check_memory, fit_memory
from benchmark.methods.networks import padded_size
from benchmark.methods.priors import build_network, resolve_setting

SUITE = """
name = "memory"
title = "A fit too large for its memory"
task = "denoising"
protocol = "rgb"
datasets = "kodak24"
images = ["kodim01"]
crop = {crop}

[[degradations]]
kind = "gaussian"
levels = [25]

[methods.median]

[methods.dip]
preset = "denoising"
fit = {{ iterations = 2 }}
"""


def _run(folder: Path, crop: int) -> pd.DataFrame:
    suite = folder / f"memory-{crop}.toml"
    suite.write_text(SUITE.format(crop=crop))
    out = folder / f"out-{crop}"
    code = main(["run", str(suite), "--out", str(out), "-q", "--allow-suspect"])
    results = pd.read_csv(out / "results.csv")
    assert code == (0 if (results.status == "ok").all() else 1)
    return results


def test_a_fit_too_large_fails_its_cell_with_the_size_that_fits(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIPBENCH_MEMORY_LIMIT", "200M")  # the workers inherit it
    refused = _run(tmp_path, crop=256)
    dip = refused[refused.method == "dip"]
    assert (dip.status == "failed").all()
    assert (refused[refused.method == "median"].status == "ok").all()  # the run went on
    message = dip.error.iloc[0]
    assert "GiB is free under DIPBENCH_MEMORY_LIMIT" in message
    side = int(re.search(r"largest square image that fits is about (\d+)x\1", message)[1])
    assert 64 <= side < 256
    # The size it names does fit, under the same limit.
    assert (_run(tmp_path, crop=side).status == "ok").all()


def test_a_memory_limit_that_is_not_a_size_is_a_message(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIPBENCH_MEMORY_LIMIT", "lots")
    results = _run(tmp_path, crop=64)
    assert results[results.method == "dip"].error.str.contains("write e.g. 8G").all()


PEAK = """
import ctypes, json, sys
import numpy as np, torch
from benchmark.degradations import degrade
from benchmark.heap import kept_heap
from benchmark.methods.fit import fit
from benchmark.methods.fit.devices import fit_memory
from benchmark.methods.networks import padded_size
from benchmark.methods.priors import build_network, resolve_setting

method, task, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
kind, level = {"denoising": ("gaussian", 25), "super_resolution": ("downsample", 4)}[task]
_, network, cfg = resolve_setting(method, task, level if task == "super_resolution" else None)
cfg = type(cfg).from_mapping({**cfg.__dict__, "iterations": 3})
clean = np.random.default_rng(0).random((size, size, 3)).astype(np.float32)
observation = degrade(clean, kind, level, np.random.default_rng(0)).observation
h, w = observation.output_shape[:2]


def status(field):  # kB in /proc/self/status
    line = next(x for x in open("/proc/self/status") if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


sizes = {}
for keep in (False, True):
    net = build_network(network, 3, torch.Generator().manual_seed(0))
    per_pixel, fixed = fit_memory(net, h, w, 1, (cfg.es_window + 12 + len(cfg.snapshots)) * 3)
    sizes["estimate"] = per_pixel * padded_size(h, net.multiple, net.minimum) ** 2 + fixed
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # heap freed earlier would hide the fit's own use
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM, the peak resident size, to the current one
    before = status("VmRSS")
    with kept_heap(keep):
        fit(net, observation, cfg, device="cpu")
    sizes["kept" if keep else "handed back"] = status("VmHWM") - before
print(json.dumps(sizes))
"""


@pytest.mark.parametrize(
    ("method", "task"), [("dip", "denoising"), ("dd", "denoising"), ("dip", "super_resolution")]
)
def test_the_estimate_covers_a_real_fits_peak_and_not_much_more(method: str, task: str) -> None:
    """The growth of a fresh process's peak resident memory over a 3-step fit at 256 px
    (measured here: the estimate is 1.1-1.2x it): under it, the guard would let an
    out-of-memory kill through; far over it, it would refuse fits that run. With freed memory
    kept for the next step (the default) the peak is higher, by the Deep Decoder's up to
    1.46x the estimate (its tensors' sizes change from layer to layer, and the kept blocks do
    not fit the next ones): :data:`benchmark.heap.KEPT_HEAP_FACTOR` covers it."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PEAK), method, task, "256"],
        capture_output=True,
        text=True,
        check=True,
    )
    sizes = json.loads(done.stdout.splitlines()[-1])
    assert sizes["handed back"] <= sizes["estimate"] <= 1.6 * sizes["handed back"], sizes
    assert sizes["kept"] <= KEPT_HEAP_FACTOR * sizes["estimate"], sizes


def test_a_fit_that_fits_only_with_the_heap_handed_back_runs_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between the estimate and the kept heap's factor times it, the guard hands freed memory
    back for the rest of the fit instead of refusing it; above, it keeps it; below, it refuses."""
    net = build_network(resolve_setting("dd", "denoising", None)[1], 3, torch.Generator())
    per_pixel, fixed = fit_memory(net, 64, 64)
    needed = per_pixel * padded_size(64, net.multiple, net.minimum) ** 2 + fixed
    cpu, outer = torch.device("cpu"), heap.kept_now()
    for limit, kept_after in ((1.1 * needed, False), (1.1 * KEPT_HEAP_FACTOR * needed, True)):
        monkeypatch.setenv("DIPBENCH_MEMORY_LIMIT", str(int(limit)))
        with kept_heap(True):
            assert heap.kept_now() is heap_kept_here()
            check_memory(net, 64, 64, 1, cpu)
            assert heap.kept_now() is (kept_after and heap_kept_here())
        assert heap.kept_now() is outer
    monkeypatch.setenv("DIPBENCH_MEMORY_LIMIT", str(int(0.9 * needed)))
    with kept_heap(True), pytest.raises(MemoryError, match="largest square image"):
        check_memory(net, 64, 64, 1, cpu)


def heap_kept_here() -> bool:
    """Whether this C library can keep the heap (glibc): elsewhere nothing is ever kept."""
    with kept_heap(True):
        return heap.kept_now()
