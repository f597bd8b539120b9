"""The recipes of docs/design.md, walked through: a method, a network method, a task, a
dataset and an executor, each added from outside the package (this file and a user module),
then run, scored and reported like the built-in ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmark import images, runner
from benchmark.cli import main
from benchmark.degradations import DEGRADATIONS, Degraded, Observation, register_degradation
from benchmark.forward import ForwardModel
from benchmark.methods import METHODS, get_method, register
from benchmark.methods.contract import NetworkMethod
from benchmark.methods.priors import run_prior
from benchmark.metrics import psnr
from benchmark.runner import estimate
from benchmark.runner.cell import prepare, run_cells
from benchmark.runner.executors import EXECUTORS, register_executor
from benchmark.suites import load_suite
from benchmark.tasks import TASKS, Task, get_task, register_task

# --- a method, from a user module named by import path ----------------------------------------

USER_MODULE = """
import numpy as np
from benchmark.methods import register


@register("box3", tasks=("denoising",), description="3x3 box filter (a recipe's toy)")
def box3(observation, *, seed=0, passes=1):
    out = observation.y
    for _ in range(passes):
        padded = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge")
        out = sum(
            padded[i : i + out.shape[0], j : j + out.shape[1]] for i in range(3) for j in range(3)
        ) / 9
    return out
"""

SUITE = """
name = "recipe"
title = "A recipe's suite"
task = "{task}"
protocol = "rgb"
datasets = "{dataset}"
images = {images}
crop = {crop}

[[degradations]]
kind = "{degradation}"
levels = [{level}]

{methods}
"""


def _suite(tmp_path: Path, methods: str, **fields: Any) -> Path:
    values = {
        "task": "denoising",
        "dataset": "kodak24",
        "images": '["kodim01", "kodim02"]',
        "crop": 48,
        "degradation": "gaussian",
        "level": 25,
    }
    values.update(fields)
    path = tmp_path / "recipe.toml"
    path.write_text(SUITE.format(methods=textwrap.dedent(methods), **values))
    return path


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder holding a user's module, as a user runs dipbench from it."""
    (tmp_path / "recipe_methods.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    METHODS.pop("box3", None)
    sys.modules.pop("recipe_methods", None)


def test_recipe_a_method_from_a_user_module(mirror: Path, user_folder: Path) -> None:
    """Write ``function(observation, *, seed, **options)`` in a module, register it, name it
    as ``module:function`` in a suite, run. Its options are checked when the suite loads."""
    suite_file = _suite(
        user_folder,
        """
        [methods.box]
        method = "recipe_methods:box3"
        label = "Box 3x3"
        options = { passes = 2 }
        """,
    )
    out = user_folder / "run"
    assert main(["run", str(suite_file), "--out", str(out), "--jobs", "1", "-q"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert (results.status == "ok").all() and len(results) == 2
    noisy = [
        psnr(observation.y, target)
        for observation, target in map(prepare, load_suite(str(suite_file), "full").cells())
    ]
    # A 3x3 box filter twice over sigma 25 noise: a real gain over each noisy input.
    assert (results.psnr.to_numpy() > np.array(noisy) + 2).all()
    assert "Box 3x3" in (out / "table.md").read_text()
    bad = _suite(
        user_folder, '[methods.box]\nmethod = "recipe_methods:box3"\noptions = { pases = 2 }'
    )
    with pytest.raises(SystemExit) as refused:  # refused when it loads, naming the fix
        main(["run", str(bad), "--out", str(out), "-q"])
    assert refused.value.code == 2


def test_a_users_module_beside_the_suite_file_is_found(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dipbench run work/my-suite.toml`` from the parent folder finds ``work/my_module.py``,
    in the workers too."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "beside_methods.py").write_text(USER_MODULE.replace("box3", "box3_beside"))
    _suite(work, '[methods.box]\nmethod = "beside_methods:box3_beside"')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the suite's folder is added for the run
    try:
        argv = ["run", "work/recipe.toml", "--out", "run", "--jobs", "2", "-q", "--no-report"]
        assert main(argv) == 0
        assert (pd.read_csv(tmp_path / "run" / "results.csv").status == "ok").all()
    finally:
        METHODS.pop("box3_beside", None)
        sys.modules.pop("beside_methods", None)


# --- a network method, declared by its capabilities ------------------------------------------


def tiny_decoder(observation: Observation, *, seed: int = 0, **options: Any) -> Any:
    """A Deep Decoder of 16 channels fitted for 60 steps: a user's network method."""
    fit_options = {"iterations": 60, "check_every": 20, "record_every": 5}
    return run_prior(
        "dd",
        observation,
        seed=seed,
        preset="denoising",
        network={"channels": 16, "layers": 4},
        fit_options=fit_options,
        **options,
    )


class TinyNetwork(NetworkMethod):
    """The recipe's contract with the runner: 60 steps a cell, each cell fitted alone."""

    def iterations(self, task: str, factor: int | None, **options: Any) -> int:
        return 60


@pytest.fixture
def network_method() -> Iterator[str]:
    register(
        "tiny_decoder",
        tasks=("denoising",),
        description="a 16-channel Deep Decoder (recipe)",
        label="Tiny decoder",
        outputs=("last", "ema", "es", "best_loss", "oracle"),
        network=TinyNetwork(),
    )(tiny_decoder)
    yield "tiny_decoder"
    METHODS.pop("tiny_decoder")


def test_recipe_a_network_method_declares_what_it_is(
    mirror: Path, tmp_path: Path, network_method: str
) -> None:
    """``network=`` its contract (``methods.contract.NetworkMethod``): the runner plans its
    steps from it, gives it the device, a progress callback and the clean image for its
    curves and oracle, keys its cells by device and threads, holds it against the task's
    trivial baseline, and the report draws its curves, as for DIP."""
    suite_file = _suite(
        tmp_path, f"[methods.tiny]\nmethod = {network_method!r}\n", images='["kodim01"]'
    )
    suite = load_suite(str(suite_file), "full")
    assert list(estimate.plan(suite.cells(), "cpu").values()) == [60]
    assert get_method(network_method).fits_network and get_method(network_method).needs_device
    out = tmp_path / "run"
    table, records = runner.run_suite(suite, out, device="cpu", jobs=1, show_progress=False)
    (record,) = records
    assert record.ok, record.error
    assert record.key == suite.cells()[0].key("cpu")  # keyed by the device type
    assert record.trivial is not None and record.trivial["method"] == "observation"
    assert set(table.output) == {"last", "ema", "es", "best_loss", "oracle"}
    from benchmark import report

    written = {p.name for p in report.write_report(out)}
    assert "curves_gaussian_25.png" in written
    two = runner.run_suite(suite, tmp_path / "two", device="cpu", threads=2, show_progress=False)
    assert two[1][0].key != record.key  # 2 threads are another cell on the CPU


# --- a user's own network method, through run, restore, check and speed ----------------------

USER_NETWORK = """'''A user's network method (the recipe's): a three-layer CNN fitted to the
degraded image from a fixed random input, stopped after ``steps`` steps.'''

import numpy as np
import torch

from benchmark.methods import Restoration, register
from benchmark.methods.contract import NetworkMethod

STEPS = 40


class TinyNet(NetworkMethod):
    '''Its contract with the runner: ``steps`` steps a cell, each cell fitted alone.'''

    def iterations(self, task, factor, **options):
        return int(options.get("steps", STEPS))


@register(
    "tiny_net",
    tasks=("denoising",),
    description="a three-layer CNN fitted to the noisy image (a recipe's network method)",
    outputs=("last",),
    network=TinyNet(),
)
def tiny_net(observation, *, seed=0, steps=STEPS, width=16, device="cpu", progress=None,
             monitor_reference=None):
    generator = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(np.ascontiguousarray(observation.y.transpose(2, 0, 1)))[None].float()
    z = torch.rand((1, 8, *y.shape[2:]), generator=generator)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(8, width, 3, padding=1), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(width, y.shape[1], 1),
    )
    with torch.no_grad():  # He initialisation from the method's own generator
        for parameter in net.parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
            scale = (2 / fan_in) ** 0.5 if parameter.dim() > 1 else 0.0
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    losses, psnrs = [], []
    for step in range(steps):
        optimizer.zero_grad()
        out = net(z)
        loss = torch.mean((out - y) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if monitor_reference is not None:
            image = out.detach()[0].numpy().transpose(1, 2, 0)
            psnrs.append(-10 * np.log10(np.mean((image - monitor_reference) ** 2)))
        if progress is not None:
            progress(step + 1, steps)
    image = np.clip(net(z).detach()[0].numpy().transpose(1, 2, 0), 0, 1)
    curves = {"iteration": np.arange(1, steps + 1), "loss": np.array(losses)}
    if psnrs:
        curves["psnr_last"] = np.array(psnrs)
    return Restoration({"last": image}, default="last", info={"iterations": steps}, curves=curves)
"""


def test_recipe_a_users_network_method_through_every_command(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A network method of the user's own (not DIP or DD under another name), in a module of
    their working folder, named by import path: ``run`` fits it through its contract,
    ``restore`` takes its options (``--option``, checked as a suite's) and records them,
    ``expect`` measures its spread and ``check`` gates its numbers, ``speed`` times its steps
    through its contract."""
    (tmp_path / "my_net.py").write_text(USER_NETWORK)
    monkeypatch.chdir(tmp_path)  # a user runs dipbench from their folder
    sys.modules.pop("my_net", None)
    try:
        suite = _suite(
            tmp_path,
            '[methods.tiny]\nmethod = "my_net:tiny_net"\noptions = { steps = 30 }\n',
            images='["kodim01"]',
        )
        out = tmp_path / "run"
        # quick: the toy fits under the noisy input, which a full run flags (exit 1)
        assert main(["run", str(suite), "--profile", "quick", "--out", str(out), "-q"]) == 0
        table = pd.read_csv(out / "results.csv")
        assert table.status.tolist() == ["ok"] and table.iterations.tolist() == [30]
        assert (out / "curves_gaussian_25.png").is_file()  # the report drew its curve
        expected, work = tmp_path / "expected.csv", tmp_path / "variants"
        argv = ["expect", str(suite), "--profile", "quick", "--seeds", "1", "-q"]
        assert main([*argv, "--expected", str(expected), "--work", str(work)]) == 0
        assert "tiny" in pd.read_csv(expected).to_csv()
        assert main(["check", str(out / "results.csv"), "--expected", str(expected)]) == 0

        source = tmp_path / "noisy.png"
        shutil.copy(images.image_path("kodak24", "kodim01"), source)
        argv = ["restore", str(source), "--task", "denoising", "--method", "my_net:tiny_net"]
        assert main([*argv, "--option", "steps=12", "--out", str(tmp_path / "r.png")]) == 0
        sidecar = json.loads((tmp_path / "r.png.json").read_text())
        assert sidecar["settings"]["options"] == {"steps": 12}
        assert sidecar["stopping"]["iterations"] == 12 and sidecar["stopping"]["output"] == "last"
        capsys.readouterr()
        for extra, said in (
            (["--option", "stesp=3"], "unknown 'stesp' (did you mean 'steps'?)"),
            (["--preset", "denoising"], "pass my_net:tiny_net's options with --option"),
        ):
            with pytest.raises(SystemExit):
                main([*argv, *extra, "--out", str(tmp_path / "x.png")])
            assert said in capsys.readouterr().err
        speed = ["speed", "--method", "my_net:tiny_net", "--size", "24", "--option", "steps=6"]
        assert main(speed) == 0
        said = capsys.readouterr().out
        assert "one cell at 24x24" in said and "a whole fit of 6 steps" in said
        assert "fitted one at a time" in said
        with pytest.raises(SystemExit):
            main(["speed", "--method", "my_net:tiny_net", "--option", "stesp=3"])
        assert "unknown 'stesp'" in capsys.readouterr().err
        with pytest.raises(SystemExit):  # DIP's network and fit come from its presets
            main(["speed", "--method", "dip", "--option", "steps=3"])
        assert "--option is for methods that fit their own loop" in capsys.readouterr().err
    finally:
        sys.modules.pop("my_net", None)
        METHODS.pop("tiny_net", None)
    package = Path(images.__file__).parent
    assert not [p for p in package.rglob("*.py") if "tiny_net" in p.read_text()]


# --- a task: its forward model, a degradation that observes through it ------------------------


class Dimming(ForwardModel):
    """``A x = g x``: an image seen through a neutral-density filter of gain ``g``."""

    task = "dimming"

    def __init__(self, gain: float) -> None:
        self.gain = gain

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.gain


def dim(image: np.ndarray, level: float, rng: np.random.Generator) -> Degraded:
    """Gain ``level`` / 100 plus Gaussian noise of std 0.01."""
    gain = level / 100
    y = Dimming(gain).observe(image) + rng.normal(0, 0.01, image.shape).astype(np.float32)
    params = {"kind": "dim", "level": level, "gain": gain, "sigma": 0.01}
    return Degraded(Observation(np.clip(y, 0, 1), Dimming(gain), params), image)


def undim(observation: Observation, *, seed: int = 0) -> np.ndarray:
    """The inverse filter: ``y / g``."""
    return np.clip(observation.y / observation.params["gain"], 0, 1)


@pytest.fixture
def dimming_task() -> Iterator[str]:
    register_task(Task("dimming", "an image behind a gray filter"))
    register_degradation("dim")(dim)
    register("undim", tasks=("dimming",), description="inverse filter (recipe)")(undim)
    register(
        "tiny_dimming",
        tasks=("dimming",),
        description="the recipe's tiny decoder, on the new task",
        fits_network=True,
    )(tiny_decoder)
    yield "dimming"
    TASKS.pop("dimming")
    DEGRADATIONS.pop("dim")
    METHODS.pop("undim")
    METHODS.pop("tiny_dimming")


def test_recipe_a_task_with_its_forward_model(
    mirror: Path, tmp_path: Path, dimming_task: str
) -> None:
    """Register the task (its forward model and trivial baseline), a degradation that observes
    through that model and a method for it: a network method then fits through the operator
    (the loss is ``||A f(z) - y||^2``), with no change to the loop."""
    suite_file = _suite(
        tmp_path,
        '[methods.undim]\nmethod = "undim"\n[methods.tiny]\nmethod = "tiny_dimming"\n',
        task=dimming_task,
        degradation="dim",
        level=40,
        images='["kodim01"]',
    )
    out = tmp_path / "run"
    table, _ = runner.run_suite(
        load_suite(str(suite_file), "full"), out, device="cpu", show_progress=False
    )
    assert (table.status == "ok").all(), table.error.tolist()
    by = table.set_index(["method", "output"]).psnr
    trivial = table.trivial_psnr.dropna().iloc[0]  # the dimmed observation itself
    assert by["undim", "out"] > trivial + 10
    # The network saw only the dimmed image: fitted through A it comes out at full brightness.
    assert by["tiny", "last"] > trivial + 5


# --- a dataset: rows in the registry, files from a URL or the mirror ---------------------------


def test_recipe_a_dataset_from_registry_rows(tmp_path: Path) -> None:
    """For the package itself: append one row per image to ``benchmark/data/registry.csv``
    (``images.registry_row`` computes sizes and checksums); downloads are verified against it,
    and suites name the set. Walked on a copy of the package, through the command line."""
    package = tmp_path / "checkout" / "benchmark"
    shutil.copytree(
        Path(images.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__")
    )
    source = tmp_path / "source" / "toyset"
    source.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("gradient", "noise"):
        pixels = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(source / f"{name}.png")
    rows = [
        images.registry_row(p, "toyset", f"https://example.org/toyset/{p.name}")
        for p in sorted(source.glob("*.png"))
    ]
    registry = package / "data" / "registry.csv"
    table = pd.read_csv(registry, dtype=str, keep_default_na=False)
    table = pd.concat([table, pd.DataFrame(rows).astype(str)], ignore_index=True)
    table.to_csv(registry, index=False)
    suite = _suite(tmp_path, '[methods.tv]\nmethod = "tv"\n', dataset="toyset", crop=0, images="[]")
    env = {
        **os.environ,
        "PYTHONPATH": str(package.parent),
        "DIPBENCH_MIRROR": str(tmp_path / "source"),
        "DIPBENCH_DATA": str(tmp_path / "cache"),
    }

    def dipbench(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "benchmark", *args]
        return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True)

    assert dipbench("download", "toyset", "-q").returncode == 0
    done = dipbench("run", str(suite), "--profile", "full", "--out", "run", "-q")
    assert done.returncode == 0, done.stderr
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert sorted(results.image) == ["gradient", "noise"] and (results.dataset == "toyset").all()
    # A file that does not match its row is refused, and not left in the cache.
    (source / "noise.png").write_bytes((source / "gradient.png").read_bytes())
    shutil.rmtree(tmp_path / "cache")
    refused = dipbench("download", "toyset", "-q")
    assert refused.returncode == 1 and "noise.png" in refused.stderr + refused.stdout
    assert not (tmp_path / "cache" / "toyset" / "noise.png").exists()


# --- an executor ------------------------------------------------------------------------------


@pytest.fixture
def reversed_executor() -> Iterator[str]:
    @register_executor("reversed")
    def in_reverse(
        units: Sequence[list[Any]],
        out: Path,
        device: str,
        revision: str,
        threads: int,
        options: dict[str, Any],
        show: bool,
    ) -> list[dict[str, Any]]:
        """Every unit in this process, last first (a stand-in for a cluster's queue)."""
        records = []
        for unit in reversed(units):
            records += run_cells(unit, out, device, revision=revision, threads=threads)
        return records

    yield "reversed"
    EXECUTORS.pop("reversed")


def test_recipe_an_executor(mirror: Path, tmp_path: Path, reversed_executor: str) -> None:
    """An executor decides where units run; computing them through ``run_cells`` keeps every
    number: the records equal the local executor's."""
    suite = load_suite(
        str(_suite(tmp_path, '[methods.tv]\nmethod = "tv"\n[methods.median]\nmethod = "median"')),
        "full",
    )
    local, _ = runner.run_suite(suite, tmp_path / "local", show_progress=False)
    other, records = runner.run_suite(
        suite, tmp_path / "other", executor=reversed_executor, show_progress=False
    )
    assert [r.cell["image"] for r in records][0] == suite.cells()[-1].image
    pd.testing.assert_series_equal(local.psnr, other.psnr)
    assert json.loads((tmp_path / "other" / "suite.json").read_text())["keys"]


def test_an_executor_cannot_change_a_network_number(
    mirror: Path, tmp_path: Path, reversed_executor: str
) -> None:
    """The unit, not the executor, sets torch's threads: a DIP cell through an executor that
    sets none, in a process left at 2 threads, equals the local executor's 1-thread cell bit
    for bit (oneDNN's numbers depend on the thread count)."""
    import torch

    methods = """
    [methods.dip]
    method = "dip"
    outputs = ["last"]
    fit = { iterations = 30 }
    network = { channels_down = 64, channels_up = 64, scales = 4 }
    """  # big enough for oneDNN to split its work between threads (smaller: bit-equal)
    suite = load_suite(str(_suite(tmp_path, methods, images='["kodim01"]', crop=64)), "full")
    local, _ = runner.run_suite(suite, tmp_path / "local", show_progress=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        other, _ = runner.run_suite(
            suite, tmp_path / "other", executor=reversed_executor, show_progress=False
        )
        assert torch.get_num_threads() == 2  # restored after the unit
    finally:
        torch.set_num_threads(previous)
    assert local.psnr.tolist() == other.psnr.tolist()


def test_unknown_names_list_the_known_ones(mirror: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="known: denoising, inpainting, super_resolution"):
        get_task("deblurring")
    suite = load_suite(str(_suite(tmp_path, '[methods.tv]\nmethod = "tv"')), "full")
    with pytest.raises(KeyError, match="known: local, inline, slurm"):
        runner.execute(suite.cells(), tmp_path / "run", executor="pbs")
    with pytest.raises(ValueError, match="registered twice"):
        register_task(TASKS["denoising"])
