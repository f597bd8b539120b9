"""Bad input gets a one-line error that names the problem and the fix, never a traceback, and
never a success that did nothing (issue: "Bad input gets a clear error and loses nothing")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark import runfolder
from benchmark.cli import main
from benchmark.suites import SuiteError, load_suite

REPO = Path(__file__).resolve().parents[1]


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


# --- usage errors: exit 2 before any work ---------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "inpainting-table1", "--profile", "ci"],
        ["reproduce", "--profile", "ci"],
        ["speed", "--no-estimate"],
    ],
)
def test_cuda_without_cuda_is_a_usage_error(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _exit_code([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available here" in err and "CUDA build of torch" in err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("option", "value"),
    [("--threads", "0"), ("--jobs", "0"), ("--threads", "-2"), ("--jobs", "two")],
)
def test_counts_below_one_are_usage_errors(
    option: str, value: str, capsys: pytest.CaptureFixture
) -> None:
    assert _exit_code(["run", "inpainting-table1", "--profile", "ci", option, value]) == 2
    err = capsys.readouterr().err
    assert option in err and ("at least 1" in err or "not a whole number" in err)


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ('levels = ["high"]', "level 'high' is not a number"),
        ("levels = []", "non-empty list"),
        ("levels = 25", "non-empty list"),
        ("levels = [true]", "level True is not a number"),
        ("imagenet_c = [6]", "severities are 1..5"),
    ],
)
def test_bad_levels_are_refused_when_the_suite_loads(
    levels: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        textwrap.dedent(f"""
        task = "denoising"
        protocol = "rgb"
        datasets = "cbm3d_color9"
        [[degradations]]
        kind = "gaussian"
        {levels}
        [methods.tv]
    """)
    )
    with pytest.raises(SuiteError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_suite(str(path))
    assert _exit_code(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_levels_chooses_some_levels_and_names_the_suites_when_one_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    suite = load_suite("deep-decoder", "ci", levels_subset=[30], methods_subset=["bm3d"])
    assert [(c.degradation, c.level) for c in suite.cells()] == [("gaussian", 30.0)]
    with pytest.raises(SuiteError, match="level.s. 31 not in suite 'deep-decoder'"):
        load_suite("deep-decoder", "ci", levels_subset=[31])
    argv = ["run", "deep-decoder", "--profile", "ci", "--levels", "31", "--out", str(tmp_path)]
    assert _exit_code(argv) == 2
    assert "its levels: gaussian 25, 30" in capsys.readouterr().err
    zero_shot = load_suite("zero-shot-denoising", "quick", levels_subset=["poisson_counts:50"])
    assert {(c.degradation, c.level) for c in zero_shot.cells()} == {("poisson_counts", 50.0)}
    both = load_suite("zero-shot-denoising", "quick", levels_subset=[50])
    assert {(c.degradation, c.level) for c in both.cells()} == {
        ("gaussian", 50.0),
        ("poisson_counts", 50.0),
    }
    with pytest.raises(SuiteError, match="gaussian:10 not in suite .*poisson_counts 50, 10"):
        load_suite("zero-shot-denoising", "quick", levels_subset=["gaussian:10"])
    with pytest.raises(SuiteError, match="'x' is not a level"):
        load_suite("zero-shot-denoising", "quick", levels_subset=["x"])


def test_closed_pipe_is_no_traceback() -> None:
    command = f"{sys.executable} -m benchmark methods | head -1"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    assert done.stdout.strip()  # the first line arrived
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


# --- successes that did nothing -------------------------------------------------------------


def test_nothing_downloaded_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("DIPBENCH_MIRROR", str(tmp_path / "no-such-mirror"))
    monkeypatch.setenv("DIPBENCH_DATA", str(tmp_path / "empty-cache"))  # nothing cached either
    assert main(["download", "set5", "--skip-unavailable", "-q"]) == 1
    err = capsys.readouterr().err
    assert "nothing could be fetched" in err and "DIPBENCH_MIRROR" in err


def test_run_without_its_images_stops_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("DIPBENCH_MIRROR", str(tmp_path / "no-such-mirror"))
    monkeypatch.setenv("DIPBENCH_DATA", str(tmp_path / "empty-cache"))  # nothing cached either
    argv = ["run", "super-resolution", "--profile", "quick", "--images", "baby"]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "dipbench download set5_x4_gt set5_x8_gt" in captured.err
    assert len((captured.out + captured.err).strip().splitlines()) <= 3
    assert not (tmp_path / "run").exists()  # no run folder, no table


def test_run_picks_its_profile_by_device(
    mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["run", "inpainting-table1", "--methods", "telea", "--images", "house", "--device"]
    assert main([*argv, "cpu", "--out", str(tmp_path / "run"), "-q", "--no-report"]) == 0
    assert "profile quick: no CUDA GPU here (cpu)" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "suite.json").read_text())["profile"] == "quick"


def test_reproduce_with_no_runnable_suite_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("DIPBENCH_MIRROR", str(tmp_path / "no-such-mirror"))
    monkeypatch.setenv("DIPBENCH_DATA", str(tmp_path / "empty-cache"))  # nothing cached either
    argv = ["reproduce", "super-resolution", "--profile", "ci", "--out", str(tmp_path / "r")]
    assert main([*argv, "-q"]) == 1
    assert "no suite could run" in capsys.readouterr().err


# --- a check that cannot fail is refused ----------------------------------------------------

EXPECTED_HEADER = (
    "statistic,suite,profile,dataset,image,degradation,level,method,output,n_cells,"
    "expected_psnr,tolerance,gated\n"
)
ROW = "cell,s,ci,d,a,gaussian,25.0,tv,out,1,{psnr},{tolerance},True\n"


def _results_file(tmp_path: Path, status: str = "ok", profile: str = "ci") -> Path:
    path = tmp_path / "results.csv"
    pd.DataFrame(
        [
            {
                "suite": "s",
                "profile": profile,
                "dataset": "d",
                "image": "a",
                "degradation": "gaussian",
                "level": 25,
                "method": "tv",
                "output": "out",
                "psnr": 25.0 if status == "ok" else float("nan"),
                "status": status,
            }
        ]
    ).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        (EXPECTED_HEADER, "has no rows"),
        (EXPECTED_HEADER + ROW.format(psnr="", tolerance="0.05"), "without an expected PSNR"),
        (EXPECTED_HEADER + ROW.format(psnr="25.0", tolerance=""), "or a tolerance"),
        (
            EXPECTED_HEADER.replace(",tolerance", "")
            + "cell,s,ci,d,a,gaussian,25.0,tv,out,1,25.0,True\n",
            "no column(s) ['tolerance']",
        ),
        (
            EXPECTED_HEADER + ROW.format(psnr="25.0", tolerance="0.05").replace("True", "False"),
            "gates no value",
        ),
    ],
)
def test_expected_files_that_cannot_fail_are_refused(
    content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    expected = tmp_path / "expected.csv"
    expected.write_text(content)
    argv = ["check", str(_results_file(tmp_path)), "--expected", str(expected)]
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "dipbench expect" in err


def test_update_from_a_run_with_no_success_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    results = _results_file(tmp_path, status="failed")
    variant = tmp_path / "seed-1"
    variant.mkdir()
    (variant / "results.csv").write_text(results.read_text())
    expected = tmp_path / "expected.csv"
    argv = ["check", str(results), "--expected", str(expected), "--update"]
    assert _exit_code([*argv, "--variants", str(variant)]) == 2
    assert "no successful cell" in capsys.readouterr().err
    assert not expected.exists()


def test_the_profile_is_part_of_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    expected = tmp_path / "expected.csv"
    expected.write_text(EXPECTED_HEADER + ROW.format(psnr="25.0", tolerance="0.05"))
    ci = ["check", str(_results_file(tmp_path)), "--expected", str(expected)]
    assert main(ci) == 0
    quick = ["check", str(_results_file(tmp_path, profile="quick")), "--expected", str(expected)]
    assert main(quick) == 1  # a quick run does not stand in for the ci grid
    assert "missing" in capsys.readouterr().err


# --- typos fail when the suite loads, with the closest known name ---------------------------

BASE_SUITE = """
task = "denoising"
protocol = "rgb"
datasets = "cbm3d_color9"
crop = 48
[[degradations]]
kind = "gaussian"
levels = [25]
[methods.tv]
[methods.dip]
fit = { iterations = 10 }
network = { channels_down = 8, channels_up = 8 }
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("crop = 48", "corp = 48", "unknown 'corp' (did you mean 'crop'?)"),
        (
            "[methods.tv]",
            "[profiles.qiuck]\n[methods.tv]",
            "unknown 'qiuck' (did you mean 'quick'?)",
        ),
        (
            'task = "denoising"',
            'task = "denoise"',
            "unknown task 'denoise' (did you mean 'denoising'?)",
        ),
        (
            "levels = [25]",
            "levels = [25]\noptions = { clp = false }",
            "unknown 'clp' (did you mean 'clip'?)",
        ),
        ("levels = [25]", "levels = [25]\nlevel = 3", "unknown 'level' (did you mean 'levels'?)"),
        (
            'kind = "gaussian"',
            'kind = "gausian"',
            "unknown degradation 'gausian' (did you mean 'gaussian'?)",
        ),
        (
            "fit = { iterations = 10 }",
            "fit = { iteration = 10 }",
            "fit option(s): unknown 'iteration' (did you mean 'iterations'?)",
        ),
        (
            "channels_down = 8",
            "chanels_down = 8",
            "skip network option(s): unknown 'chanels_down' (did you mean 'channels_down'?)",
        ),
        (
            "[methods.tv]",
            "[methods.tv]\noptions = { weight = 0.1 }",
            "unknown 'weight' (did you mean 'weight_factor'?)",
        ),
        (
            "[methods.tv]",
            "[methods.tv]\npreset = 3\nlabl = 'TV'",
            "unknown 'labl' (did you mean 'label'?)",
        ),
        (
            "[methods.dip]",
            "[profiles.ci]\ncorp = 3\n[methods.dip]",
            "[profiles.ci] key(s): unknown 'corp' (did you mean 'crop'?)",
        ),
        (
            "network = { channels_down = 8, channels_up = 8 }",
            "network = { channels_down = 8, batchnorm_init = 'zeros' }",
            "batchnorm_init 'zeros'",
        ),
        (
            "network = { channels_down = 8, channels_up = 8 }",
            "preset = 'denoisin'",
            "unknown dip preset 'denoisin'",
        ),
    ],
)
def test_typos_fail_at_load_naming_the_closest_key(
    old: str, new: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert old in BASE_SUITE
    path = tmp_path / "typo.toml"
    path.write_text(BASE_SUITE.replace(old, new, 1))
    with pytest.raises(SuiteError) as err:
        load_suite(str(path), "ci")
    assert message in str(err.value)
    assert _exit_code(["run", str(path), "--profile", "ci", "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_the_base_suite_of_the_typo_tests_loads(tmp_path: Path) -> None:
    path = tmp_path / "fine.toml"
    path.write_text(BASE_SUITE)
    assert load_suite(str(path), "ci").cells()


def test_fuzz_suite_loader_only_raises_suite_errors(tmp_path: Path) -> None:
    """Random keys and values at every level of a suite: SuiteError (exit 2) or a suite,
    never another exception."""
    import random
    import tomllib

    rng = random.Random(7)
    base = tomllib.loads(BASE_SUITE)
    values = [0, -1, 3.5, "x", "", True, [], [1, "a"], {"a": 1}, {"iterations": "ten"}, [{}]]
    keys = [
        "crop",
        "corp",
        "levels",
        "kind",
        "options",
        "methods",
        "degradations",
        "task",
        "profiles",
        "fit",
        "network",
        "images",
        "datasets",
        "preset",
        "seed",
        "outputs",
    ]

    def mutate(table: dict, depth: int = 0) -> dict:
        table = dict(table)
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(keys + list(table))
            if depth < 2 and isinstance(table.get(key), dict) and rng.random() < 0.5:
                table[key] = mutate(table[key], depth + 1)
            elif rng.random() < 0.2:
                table.pop(key, None)
            else:
                table[key] = rng.choice(values)
        return table

    def dump(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return f'"{value}"'
        if isinstance(value, list):
            return "[" + ", ".join(dump(v) for v in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f'"{k}" = {dump(v)}' for k, v in value.items()) + "}"
        return repr(value)

    outcomes = {"loaded": 0, "refused": 0}
    for trial in range(300):
        suite = mutate(base)
        path = tmp_path / f"fuzz{trial}.toml"
        path.write_text("\n".join(f'"{k}" = {dump(v)}' for k, v in suite.items()))
        try:
            load_suite(str(path), rng.choice(["full", "quick", "ci"])).cells()
            outcomes["loaded"] += 1
        except SuiteError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100, outcomes


# --- a worker that dies is a failed cell, not a traceback -----------------------------------

DYING_METHODS = """
import os
import signal

def dies(observation, *, seed=0, how="exit", **options):
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize(("how", "cause"), [("exit", "exited with code 3"), ("kill", "SIGKILL")])
def test_a_dying_worker_is_recorded_as_a_failed_cell_and_the_run_goes_on(
    how: str,
    cause: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mirror: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    import os

    (tmp_path / "dying_methods.py").write_text(DYING_METHODS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )
    suite = tmp_path / "dying.toml"
    suite.write_text(
        textwrap.dedent(f"""
        name = "dying"
        task = "inpainting"
        protocol = "gray"
        datasets = "bm3d_gray11"
        images = ["house", "peppers"]
        crop = 40
        [[degradations]]
        kind = "bernoulli"
        levels = [0.5]
        [methods.telea]
        [methods.dies]
        method = "dying_methods:dies"
        options = {{ how = "{how}" }}
        """)
    )
    out = tmp_path / "run"
    assert main(["run", str(suite), "--jobs", "2", "--out", str(out), "-q", "--no-report"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "BrokenProcessPool" not in err
    table = pd.read_csv(out / "results.csv")
    assert (table[table.method == "telea"].status == "ok").all() and len(table) == 4
    died = table[table.method == "dies"]
    assert (died.status == "failed").all() and died.error.str.contains(cause).all()


# --- interrupted and committed run folders --------------------------------------------------

INTERRUPTING_METHODS = """
import os
import time

CALLS = []

def stops_on_peppers(observation, *, seed=0, **options):
    CALLS.append(1)
    if len(CALLS) > 1:  # the second cell (peppers: cells run image by image, in one worker)
        open(os.environ["DIPBENCH_TEST_MARK"], "w").close()
        time.sleep(120)  # until the run is stopped
    return observation.y
"""


def test_an_interrupted_run_is_still_a_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "interrupting.py").write_text(INTERRUPTING_METHODS)
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = tmp_path / "stop.toml"
    suite.write_text(
        textwrap.dedent("""
        name = "stop"
        task = "denoising"
        protocol = "gray"
        datasets = "bm3d_gray11"
        images = ["house", "peppers"]
        crop = 40
        [[degradations]]
        kind = "gaussian"
        levels = [25]
        [methods.mine]
        method = "interrupting:stops_on_peppers"
        """)
    )
    out = tmp_path / "run"
    mark = tmp_path / "peppers-started"
    monkeypatch.setenv("DIPBENCH_TEST_MARK", str(mark))

    def stop_when_peppers_starts() -> None:  # SIGTERM, as a scheduler or kill would
        deadline = time.monotonic() + 120
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_peppers_starts, daemon=True).start()
    argv = ["run", str(suite), "--jobs", "1", "--out", str(out), "-q", "--no-report"]
    assert main(argv) == 130
    assert "every finished cell is kept" in capsys.readouterr().err
    assert (out / "suite.json").is_file()
    assert list(pd.read_csv(out / "results.csv").image) == ["house"]
    assert main(["report", str(out), "--no-figures"]) == 0
    assert "1 cell(s) not run" in (out / "table.md").read_text()


def test_reporting_a_committed_folder_never_makes_it_worse(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil
    import subprocess as sp

    repo = Path(__file__).resolve().parents[1]
    tracked = sp.run(
        ["git", "ls-files", "reports/quick/super-resolution"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if not tracked:
        pytest.skip("no committed quick report in this checkout")
    for name in tracked:  # what a fresh clone has: the tables, not the cell records
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, target)
    folder = tmp_path / "reports" / "quick" / "super-resolution"
    before = (folder / "table.md").read_text()
    assert main(["report", str(folder)]) == 1
    assert "no cell records" in capsys.readouterr().err
    assert (folder / "table.md").read_text() == before
    assert main(["report", str(tmp_path / "reports"), "--index"]) == 0
    index = (tmp_path / "reports" / "README.md").read_text()
    results = pd.read_csv(folder / "results.csv")
    ok = results[results.status == "ok"].key.nunique()
    assert f"{ok}/{ok} cells" in index and "0/" not in index


# --- rough edges ----------------------------------------------------------------------------


def test_a_users_method_in_the_current_folder_is_found_by_workers_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror: Path
) -> None:
    import sys

    (tmp_path / "my_local_method.py").write_text(
        "def identity(observation, *, seed=0, **options):\n    return observation.y\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    suite = tmp_path / "local.toml"
    suite.write_text(
        textwrap.dedent("""
        task = "denoising"
        protocol = "gray"
        datasets = "bm3d_gray11"
        images = ["house", "peppers"]
        crop = 32
        [[degradations]]
        kind = "gaussian"
        levels = [25]
        [methods.mine]
        method = "my_local_method:identity"
        """)
    )
    out = tmp_path / "run"
    assert main(["run", str(suite), "--jobs", "2", "--out", str(out), "-q", "--no-report"]) == 0
    assert (pd.read_csv(out / "results.csv").status == "ok").all()


def test_cached_files_follow_the_umask(tmp_path: Path, mirror: Path) -> None:
    import os

    from benchmark import images

    previous = os.umask(0o022)
    try:
        path, _ = images.fetch(images.find("set5", "baby"), root=tmp_path)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


# --- two runs on one folder split the grid --------------------------------------------------


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path: Path) -> None:
    import json
    import os
    import platform
    import time

    from benchmark.runner.claims import claim, release

    lock = tmp_path / "cell.lock"
    assert claim(lock) and not claim(lock)  # held by this (live) process
    release(lock)
    assert not lock.exists() and claim(lock)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": platform.node()}))
    assert claim(lock)  # its owner has exited: stale
    lock.write_text(json.dumps({"pid": 1, "host": "another-host"}))
    assert not claim(lock)  # a fresh claim from another machine is respected
    old = time.time() - 49 * 3600
    os.utime(lock, (old, old))
    assert claim(lock)  # ... unless it is older than FOREIGN_CLAIM_HOURS


def test_a_cell_claimed_by_another_live_run_is_left_to_it(
    tmp_path: Path, mirror: Path, capsys: pytest.CaptureFixture
) -> None:
    import json
    import platform

    from benchmark import runner

    suite = load_suite("inpainting-table1", "ci", methods_subset=["telea"])
    cells = suite.cells()
    out = tmp_path / "run"
    runfolder.cells_dir(out).mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = runner.records.record_path(cells[0], out, "auto", 1).with_suffix(".lock")
        lock.write_text(json.dumps({"pid": other.pid, "host": platform.node()}))
        argv = ["run", "inpainting-table1", "--profile", "ci", "--methods", "telea"]
        assert main([*argv, "--jobs", "1", "--out", str(out), "-q", "--no-report"]) == 0
        assert "1 cell(s) are being computed by another run" in capsys.readouterr().out
        table = pd.read_csv(out / "results.csv")
        assert set(table.image) == {c.image for c in cells[1:]}
    finally:
        other.kill()
        other.wait()
    # The other run is gone: its claim is stale, and the next run computes the cell.
    assert main([*argv, "--jobs", "1", "--out", str(out), "-q", "--no-report"]) == 0
    assert len(pd.read_csv(out / "results.csv")) == len(cells)
    assert not list(runfolder.cells_dir(out).glob("*.lock"))


def test_a_long_run_needs_yes_and_says_its_estimate(
    tmp_path: Path, mirror: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    argv = ["run", "inpainting-table1", "--methods", "dip", "--device", "cpu", "--profile", "full"]
    argv += ["--images", "barbara"]  # one 512x512 fit of 11000 steps: hours of CPU
    assert _exit_code([*argv, "--out", str(out)]) == 2  # no terminal
    captured = capsys.readouterr()
    assert "estimated time: about" in captured.out
    assert "add --yes to start it" in captured.err
    assert not (out / "cells").exists()


def test_a_protocol_that_cannot_score_the_images_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "gray_on_color.toml"
    path.write_text(BASE_SUITE.replace('protocol = "rgb"', 'protocol = "gray"'))
    with pytest.raises(SuiteError, match="protocol 'gray' scores gray images, but cbm3d_color9/"):
        load_suite(str(path))


GUARDLESS_SCRIPT = """
from pathlib import Path

from benchmark.runner import run_suite
from benchmark.suites import load_suite

# No `if __name__ == "__main__":` guard, as in a notebook cell or a quick script.
suite = load_suite("inpainting-table1", "ci", images_subset=["house"], methods_subset=["telea"])
table, _ = run_suite(suite, Path("run"), show_progress=False)
print("statuses", table.status.tolist())
"""


def test_a_script_without_a_main_guard_runs_its_cells_in_workers(
    tmp_path: Path, mirror: Path
) -> None:
    (tmp_path / "script.py").write_text(GUARDLESS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "statuses ['ok']" in done.stdout
    assert done.stdout.count("statuses") == 1  # the script did not run again in a worker


SCALING_METHOD = """
import os


def scaled(observation, *, seed=0):
    return observation.y * float(os.environ["DIPBENCH_TEST_SCALE"])
"""


def test_workers_compute_under_the_runs_environment_of_the_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror: Path
) -> None:
    """Workers fork from a server started once per process: each unit still runs under the
    run's environment as it is when the unit is handed over."""
    (tmp_path / "scaling_method.py").write_text(SCALING_METHOD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = tmp_path / "scaled.toml"
    suite.write_text(
        textwrap.dedent("""
        task = "denoising"
        protocol = "gray"
        datasets = "bm3d_gray11"
        images = ["house"]
        crop = 32
        [[degradations]]
        kind = "gaussian"
        levels = [25]
        [methods.scaled]
        method = "scaling_method:scaled"
        """)
    )
    psnrs = []
    for scale in ("1.0", "0.5"):
        monkeypatch.setenv("DIPBENCH_TEST_SCALE", scale)
        out = tmp_path / f"run-{scale}"
        assert main(["run", str(suite), "--out", str(out), "-q", "--no-report"]) == 0
        psnrs.append(float(pd.read_csv(out / "results.csv").psnr.iloc[0]))
    assert psnrs[0] > psnrs[1] + 3  # half the intensities: far off
    sys.modules.pop("scaling_method", None)
