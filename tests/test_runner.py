"""Suites as data, resumable cells, failures, parallel and Slurm (submitit local) execution."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmark import file_memo, runfolder, runner
from benchmark.cli import main
from benchmark.suites import SuiteError, load_suite, packaged_suites

REQUIRED = [
    "suite",
    "profile",
    "dataset",
    "image",
    "task",
    "degradation",
    "level",
    "method",
    "seed",
    "psnr",
    "ssim",
    "seconds",
    "device",
]

USER_METHODS = '''
import numpy as np

def identity(observation, *, seed=0, **options):
    """A "method" that returns its input: the user-method path end to end."""
    return observation.y

def broken(observation, *, seed=0, **options):
    raise RuntimeError("deliberately broken")

def telea_flipped(observation, *, seed=0, **options):
    """Telea's inpainting with a sign error: 1 - x."""
    from benchmark.methods import restore
    return 1.0 - restore("telea", observation)
'''


def _suite_file(
    tmp_path: Path, methods: str, *, images: str = '["house", "peppers"]', extra: str = ""
) -> Path:
    (tmp_path / "my_methods.py").write_text(USER_METHODS)
    path = tmp_path / "mine.toml"
    path.write_text(
        textwrap.dedent(f"""
        name = "mine"
        task = "inpainting"
        protocol = "gray"
        datasets = "bm3d_gray11"
        images = {images}
        crop = 40
        {extra}
        [[degradations]]
        kind = "bernoulli"
        levels = [0.5]
    """)
        + textwrap.dedent(methods)
    )
    return path


@pytest.fixture
def user_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )
    return tmp_path


# --- suites ---------------------------------------------------------------------------------


def test_every_packaged_suite_loads_in_every_profile() -> None:
    assert set(packaged_suites()) == {
        "inpainting-table1",
        "denoising-color",
        "noise-types",
        "super-resolution",
        "deep-decoder",
        "inpainting-kinds",
        "cifar10-noise",
        "zero-shot-denoising",
        "zero-shot-denoising-gray",
    }
    for name in packaged_suites():
        for profile in ("full", "quick", "ci"):
            suite = load_suite(name, profile)
            assert suite.cells(), (name, profile)
            # what `dipbench list` reads without the methods' check: the same grid
            assert load_suite(name, profile, check_methods=False) == suite, (name, profile)
    table1 = load_suite("inpainting-table1", "full")
    assert len(table1.images) == 11 and {m.key for m in table1.methods} >= {"dip", "dd", "telea"}


def test_seeds_depend_on_the_cell_not_on_the_order_or_selection() -> None:
    full = load_suite("inpainting-table1", "ci").cells()
    part = load_suite(
        "inpainting-table1", "ci", images_subset=["peppers"], methods_subset=["dd"]
    ).cells()
    assert len(part) == 1
    twin = next(c for c in full if c.image == "peppers" and c.method_key == "dd")
    assert (part[0].degradation_seed, part[0].method_seed) == (
        twin.degradation_seed,
        twin.method_seed,
    )
    for image in ("house", "peppers"):  # every method sees the same degraded input
        assert len({c.degradation_seed for c in full if c.image == image}) == 1
    assert len({c.method_seed for c in full}) == len(full)


def test_changed_parameters_change_the_key() -> None:
    a = load_suite("inpainting-table1", "ci").cells()[0]
    b = load_suite("inpainting-table1", "quick").cells()[0]
    assert a.method_key == b.method_key == "dip"
    assert a.key("cpu") != b.key("cpu")
    assert a.key("cpu") != a.key("cuda")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "no-such-suite"], "inpainting-table1"),
        (["run", "inpainting-table1", "--images", "lenna"], "bm3d_gray11/barbara"),
        (["run", "inpainting-table1", "--methods", "dip_ema"], "biharmonic"),
        (["run", "inpainting-table1", "--profile", "fast"], "quick"),
    ],
)
def test_unknown_names_exit_2_with_the_valid_ones(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def test_bad_suite_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'task = "denoising"\nprotocol = "rgb"\ndatasets = "set5"\nmethods = {}\n'
        'degradations = [{kind = "blur", levels = [1]}]\n'
    )
    with pytest.raises(SuiteError, match="unknown degradation 'blur'"):
        load_suite(str(path))


def test_a_method_runs_only_on_the_degradations_it_names(tmp_path: Path) -> None:
    suite = load_suite("super-resolution", "full")
    by_method: dict[str, set[str]] = {}
    for cell in suite.cells():
        by_method.setdefault(cell.method_key, set()).add(cell.degradation)
    assert by_method["bicubic"] == {"downsample_bicubic"}  # the paper's row, LapSRN's input
    for key in ("dip", "dd", "bicubic_dip_lr", "lanczos"):
        assert by_method[key] == {"downsample"}, key
    bicubic = [c for c in suite.cells() if c.method_key == "bicubic"]
    assert {c.level for c in bicubic} == {4.0} and len(bicubic) == 5 + 14
    path = tmp_path / "bad.toml"
    path.write_text(
        'task = "denoising"\nprotocol = "rgb"\ndatasets = "cbm3d_color9"\n'
        'degradations = [{kind = "gaussian", levels = [25]}]\n'
        'methods = {tv = {degradations = ["poisson"]}}\n'
    )
    with pytest.raises(SuiteError, match=r"method 'tv': degradations \['poisson'\] are not in"):
        load_suite(str(path))


# --- running --------------------------------------------------------------------------------


def test_ci_profile_of_table1_writes_results(
    tmp_path: Path, mirror: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    assert main(["run", "inpainting-table1", "--profile", "ci", "--out", str(out), "-q"]) == 0
    table = pd.read_csv(out / "results.csv")
    assert set(REQUIRED) <= set(table.columns)
    assert set(table.image) == {"house", "peppers"}
    assert {"dip", "dd", "biharmonic", "telea"} == set(table.method)
    assert (table.status == "ok").all() and table.psnr.notna().all()
    assert table[table.method == "dip"].output.tolist()[:4] == ["last", "ema", "es", "oracle"]
    assert table[table.output == "oracle"].oracle.all()
    # A second run computes nothing and rewrites the same table.
    assert main(["run", "inpainting-table1", "--profile", "ci", "--out", str(out), "-q"]) == 0
    assert "8 already done, 0 to run" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), table)


def test_a_failed_cell_is_recorded_and_the_run_goes_on(
    user_path: Path, mirror: Path, capsys: pytest.CaptureFixture
) -> None:
    suite = _suite_file(
        user_path,
        """
        [methods.mine]
        method = "my_methods:identity"
        [methods.broken]
        method = "my_methods:broken"
        [methods.telea]
    """,
    )
    out = user_path / "run"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "2 failed cell(s)" in err and "deliberately broken" in err
    table = pd.read_csv(out / "results.csv")
    assert set(table[table.status == "ok"].method) == {"mine", "telea"}
    failed = table[table.status == "failed"]
    assert len(failed) == 2 and failed.psnr.isna().all()
    # The identity "method" scores exactly the masked input.
    mine = table[table.method == "mine"]
    assert (mine.psnr < table[table.method == "telea"].psnr.to_numpy()).all()


def test_sigkill_halfway_then_resume_recomputes_nothing(user_path: Path, mirror: Path) -> None:
    suite = _suite_file(
        user_path,
        """
        [methods.dd]
        network = { channels = 32 }
        fit = { iterations = 250 }
        [methods.telea]
    """,
        images='["house", "peppers", "cameraman", "montage"]',
    )
    out = user_path / "run"
    cells = runfolder.cells_dir(out)
    argv = [
        sys.executable,
        "-m",
        "benchmark",
        "run",
        str(suite),
        "--out",
        str(out),
        "-q",
        "--device",
        "cpu",
    ]
    # A run of its own process group, as a shell job is: SIGKILL reaches the run and its
    # workers at once, mid-cell.
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while len(list(cells.glob("*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cells.glob("*.json")}
    assert 3 <= len(before) < 8, "the kill should land halfway through the grid"
    for content in before.values():
        json.loads(content[1])  # every record on disk is whole

    # A tiny DD at the full profile is under Telea: suspect, accepted here (tested below).
    resumed = ["run", str(suite), "--out", str(out), "-q", "--device", "cpu", "--allow-suspect"]
    assert main(resumed) == 0
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cells.glob("*.json")}
    assert len(after) == 8
    for name, stamp in before.items():
        assert after[name] == stamp, f"{name} was recomputed"
    assert not list(cells.glob(".*.tmp"))
    assert (pd.read_csv(out / "results.csv").status == "ok").all()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are told apart by /proc")
def test_temporaries_of_killed_workers_not_yet_reaped_are_swept(tmp_path: Path) -> None:
    # A killed worker is a zombie until reaped, and kill(pid, 0) still succeeds on it: its
    # temporary files must go all the same, or a run resumed at once keeps them for good.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while not Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    try:
        dead = tmp_path / f".a.json.{child.pid}.tmp"
        alive = tmp_path / f".b.json.{os.getpid()}.tmp"
        unnamed = tmp_path / ".c.json.tmp"
        for path in (dead, alive, unnamed):
            path.write_text("{")
        assert not runner.records.process_is_running(child.pid)
        assert runner.records.process_is_running(os.getpid())
        runner.records.remove_stale_temporaries(tmp_path)
        # a name atomic_write does not make (no pid) may be a user's file: it is kept
        assert sorted(tmp_path.iterdir()) == sorted([alive, unnamed])
    finally:
        child.wait()


def _psnrs(out: Path) -> pd.Series:
    table = pd.read_csv(out / "results.csv")
    return table.set_index(["image", "method", "output"]).psnr.sort_index()


def test_two_jobs_give_the_same_psnrs_as_one(tmp_path: Path, mirror: Path) -> None:
    argv = [
        "run",
        "inpainting-table1",
        "--profile",
        "ci",
        "--methods",
        "dd",
        "dip",
        "telea",
        "--device",
        "cpu",
        "-q",
    ]
    assert main([*argv, "--out", str(tmp_path / "one"), "--jobs", "1"]) == 0
    assert main([*argv, "--out", str(tmp_path / "two"), "--jobs", "2"]) == 0
    one, two = _psnrs(tmp_path / "one"), _psnrs(tmp_path / "two")
    pd.testing.assert_index_equal(one.index, two.index)
    assert np.abs(one.to_numpy() - two.to_numpy()).max() <= 1e-4


def test_slurm_executor_through_submitit_local_matches_local(tmp_path: Path, mirror: Path) -> None:
    pytest.importorskip("submitit")
    argv = [
        "run",
        "inpainting-table1",
        "--profile",
        "ci",
        "--methods",
        "dd",
        "biharmonic",
        "--device",
        "cpu",
        "-q",
    ]
    assert main([*argv, "--out", str(tmp_path / "local")]) == 0
    assert (
        main(
            [
                *argv,
                "--out",
                str(tmp_path / "slurm"),
                "--executor",
                "slurm",
                "--slurm-cluster",
                "local",
            ]
        )
        == 0
    )
    local, slurm = _psnrs(tmp_path / "local"), _psnrs(tmp_path / "slurm")
    assert np.abs(local.to_numpy() - slurm.to_numpy()).max() <= 1e-4
    assert list((tmp_path / "slurm" / "slurm_logs").iterdir())  # one log folder per job


def test_concurrent_runs_on_one_folder_do_not_corrupt_it(user_path: Path, mirror: Path) -> None:
    suite = _suite_file(
        user_path,
        """
        [methods.biharmonic]
        [methods.telea]
        [methods.mine]
        method = "my_methods:identity"
    """,
        images='["house", "peppers", "cameraman", "montage", "boat"]',
    )
    out = user_path / "run"
    argv = [sys.executable, "-m", "benchmark", "run", str(suite), "--out", str(out), "-q"]
    processes = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    records = list(runfolder.cells_dir(out).glob("*.json"))
    assert len(records) == 15
    assert all(runfolder.Record.read(r).ok for r in records)
    assert len(pd.read_csv(out / "results.csv")) == 15


def test_a_resumed_run_reads_each_record_and_hashes_each_output_once(
    user_path: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning asks for a record four times (stale, pending, pending again, claimed) and the
    results and the report twice more; the file is read, and its outputs hashed, once."""
    suite = _suite_file(user_path, "[methods.telea]\n[methods.biharmonic]")
    out = user_path / "run"
    argv = ["run", str(suite), "--out", str(out), "-q"]
    assert main(argv) == 0
    monkeypatch.setattr(file_memo, "_SETTLED_S", 0.0)  # what this test wrote counts as settled
    file_memo.forget()  # as a new command's process starts
    reads: Counter[str] = Counter()
    read_text, read_bytes = Path.read_text, Path.read_bytes

    def counted(read: Any) -> Any:
        def reading(path: Path, *args: Any, **kwargs: Any) -> Any:
            if path.parent.name == "cells":
                reads[path.name] += 1
            return read(path, *args, **kwargs)

        return reading

    monkeypatch.setattr(Path, "read_text", counted(read_text))
    monkeypatch.setattr(Path, "read_bytes", counted(read_bytes))
    assert main(argv) == 0
    records = [name for name in reads if name.endswith(".json")]
    assert len(records) == 4 and any(name.endswith(".png") for name in reads)
    assert set(reads.values()) == {1}, reads


def test_full_profile_marks_suspect_cells_and_fails_unless_allowed(
    user_path: Path, mirror: Path, capsys: pytest.CaptureFixture
) -> None:
    """A network far under its task's trivial baseline at the full profile is a bug until
    explained: marked in the table, listed, and exit 1 without --allow-suspect."""
    suite = _suite_file(
        user_path,
        """
        [methods.dd]
        network = { channels = 8 }
        fit = { iterations = 5 }
    """,
        images='["house"]',
    )
    out = user_path / "run"
    argv = ["run", str(suite), "--out", str(out), "-q", "--device", "cpu", "--profile", "full"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 suspect cell(s)" in err
    assert "more than 1 dB under the trivial baseline (telea" in err
    assert "--allow-suspect" in err
    table = pd.read_csv(out / "results.csv")
    dd = table[(table.method == "dd") & (table.output == "best_loss")]
    assert (dd.psnr < dd.trivial_psnr - 1).all() and dd.suspect.str.contains("telea").all()
    markdown = (out / "table.md").read_text()
    assert "‡" in markdown and "trivial baseline" in markdown
    assert main([*argv, "--allow-suspect"]) == 0  # the cached cell, accepted
    # The quick profile judges only `last` against the oracle: nothing suspect here.
    assert main(["run", str(suite), "--profile", "quick", "--out", str(user_path / "q"), "-q"]) == 0


def test_a_users_method_under_the_trivial_baseline_is_suspect_at_every_profile(
    user_path: Path, mirror: Path, capsys: pytest.CaptureFixture
) -> None:
    """A user's method with a sign error, far under Telea, at the ci profile: marked suspect
    in results.csv, and the run's last line says so (exit 0 below the full profile)."""
    suite = _suite_file(
        user_path,
        """
        [methods.flipped]
        method = "my_methods:telea_flipped"
        [methods.telea]
    """,
        images='["house"]',
    )
    out = user_path / "run"
    assert main(["run", str(suite), "--profile", "ci", "--out", str(out), "-q"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("1 suspect cell(s)")
    assert any("flipped" in line and "under the trivial baseline" in line for line in err)
    table = pd.read_csv(out / "results.csv")
    flipped = table[table.method == "flipped"]
    assert (flipped.psnr < flipped.trivial_psnr - 1).all()
    assert flipped.suspect.str.contains("telea").all()
    # results.csv names what the suite's key ran, and with which options.
    assert (flipped.implementation == "my_methods:telea_flipped").all()
    assert (flipped.options == "{}").all()
    assert table[table.method == "telea"].suspect.fillna("").eq("").all()  # packaged: not judged


def test_a_run_logged_to_a_file_has_no_control_sequences(tmp_path: Path, mirror: Path) -> None:
    """A log or a pipe gets whole lines: no carriage returns, no escape sequences, no bars for
    one-shot methods (a terminal gets the tqdm bars)."""
    log = tmp_path / "run.log"
    argv = [sys.executable, "-m", "benchmark", "run", "inpainting-table1", "--profile", "ci"]
    argv += ["--methods", "telea", "biharmonic", "--jobs", "2", "--out", str(tmp_path / "run")]
    with log.open("w") as file:
        done = subprocess.run(argv, stdout=file, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and "\x1b[" not in text, repr(text)
    assert "cells 4/4 after" in text


def test_a_preset_per_level_is_refused_with_the_form_that_works(tmp_path: Path) -> None:
    """``preset = { gaussian_25 = ... }`` was accepted and dropped: every cell ran the
    default preset and recorded it."""
    path = tmp_path / "levels.toml"
    path.write_text(
        'name = "levels"\ntask = "denoising"\nprotocol = "rgb"\ndatasets = "cbm3d_color9"\n'
        '[[degradations]]\nkind = "gaussian"\nlevels = [25, 50]\n[methods.dip]\n'
        'preset = { gaussian_25 = "denoising", gaussian_50 = "denoising" }\n'
    )
    with pytest.raises(SuiteError, match=r"preset keys \['gaussian_25', 'gaussian_50'\] are not"):
        load_suite(str(path))
    path.write_text(
        path.read_text()
        .replace("gaussian_25", "gaussian")
        .replace(', gaussian_50 = "denoising"', "")
    )
    suite = load_suite(str(path))
    assert {spec.options_for("gaussian")["preset"] for spec in suite.methods} == {"denoising"}


def test_list_takes_a_users_suite_file(
    user_path: Path, capsys: pytest.CaptureFixture, mirror: Path
) -> None:
    suite = _suite_file(user_path, "[methods.telea]\n[methods.biharmonic]")
    assert main(["list", str(suite)]) == 0
    said = capsys.readouterr().out
    assert (
        "mine" in said and "4 cells: 2 images (crop 40)" in said and "(telea, biharmonic)" in said
    )
    with pytest.raises(SystemExit):
        main(["list", str(user_path / "absent.toml")])
    assert "suite file not found" in capsys.readouterr().err


TYPED_METHOD = """
def scaled(observation, *, seed=0, gain=1.0, steps=20, name="x"):
    return observation.y * gain
"""


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ('steps = "20"', "option 'steps' = '20' (str) where its default is 20 (int) (write it"),
        ("gain = true", "option 'gain' = True (bool) where its default is 1.0 (float)"),
        ("name = 3", "option 'name' = 3 (int) where its default is 'x' (str)"),
    ],
)
def test_a_users_option_of_the_wrong_type_is_refused_at_load(
    user_path: Path, given: str, said: str
) -> None:
    """It failed every cell with a TypeError; an int where a float is the default is fine."""
    (user_path / "typed_methods.py").write_text(TYPED_METHOD)
    entry = '[methods.mine]\nmethod = "typed_methods:scaled"\noptions = { %s }\n'
    try:
        with pytest.raises(SuiteError, match=re.escape(said)):
            load_suite(str(_suite_file(user_path, entry % given)))
        assert load_suite(str(_suite_file(user_path, entry % "gain = 2, steps = 5")))
    finally:
        sys.modules.pop("typed_methods", None)
