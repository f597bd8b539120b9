"""Numbers that stay true in the user's hands: every record carries the code that computed it
(a record whose code changed is recomputed, or kept and marked stale), runs never write into
the committed reports, and means are compared only over the same images."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import check, provenance
from benchmark.cli import main
from benchmark.methods import METHODS
from benchmark.runfolder import Record

REPO = Path(__file__).resolve().parents[1]

USER_METHOD = """
import numpy as np


def blur(observation, *, seed=0, strength=1.0, **options):
    y = observation.y
    padded = np.pad(y, ((1, 1), (1, 1), (0, 0)), mode="edge")
    box = sum(padded[i : i + y.shape[0], j : j + y.shape[1]] for i in range(3) for j in range(3))
    return (1 - WEIGHT * strength) * y + WEIGHT * strength * box / 9


WEIGHT = {weight}
"""

SUITE = """
name = "{name}"
title = "A user's suite"
task = "denoising"
protocol = "{protocol}"
datasets = "{dataset}"
images = {images}
crop = 40

[[degradations]]
kind = "gaussian"
levels = [25]

{methods}
"""


def _suite(folder: Path, methods: str, *, name: str = "mine", **fields: str) -> Path:
    values = {"protocol": "rgb", "dataset": "kodak24", "images": '["kodim01", "kodim02"]'}
    values.update(fields)
    path = folder / f"{name}.toml"
    path.write_text(SUITE.format(name=name, methods=textwrap.dedent(methods), **values))
    return path


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder with a user's method module, as a user runs dipbench from it."""
    (tmp_path / "my_methods.py").write_text(USER_METHOD.format(weight=1.0))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_methods", None)  # another test's module of that name
    yield tmp_path
    sys.modules.pop("my_methods", None)


def _psnrs(folder: Path) -> list[float]:
    table = pd.read_csv(folder / "results.csv")
    return table.sort_values(["image", "method"]).psnr.round(6).tolist()


def _expected_from(folder: Path, path: Path) -> Path:
    """An expected file gating every value of ``folder`` at the tolerance floor."""
    results = pd.read_csv(folder / "results.csv")
    table = check.derive_expected(results, {"seed-1": results}, {"test": "1"})
    table.to_csv(path, index=False)
    return path


# --- 1. results outlive the code that made them -----------------------------------------------


def test_editing_a_user_method_recomputes_its_cells(
    mirror: Path, user_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    suite = _suite(user_folder, '[methods.blur]\nmethod = "my_methods:blur"\n\n[methods.median]')
    reused = user_folder / "reused"
    assert main(["run", str(suite), "--out", str(reused), "-q"]) == 0
    expected = _expected_from(reused, user_folder / "expected.csv")
    before = _psnrs(reused)

    (user_folder / "my_methods.py").write_text(USER_METHOD.format(weight=0.3))
    sys.modules.pop("my_methods", None)
    capsys.readouterr()
    assert main(["run", str(suite), "--out", str(reused), "-q"]) == 0
    said = capsys.readouterr().out
    assert "2 finished cell(s) were computed by code that has changed since" in said
    assert "my_methods.py: 2" in said and "2 already done, 2 to run" in said  # median kept

    fresh = user_folder / "fresh"
    assert main(["run", str(suite), "--out", str(fresh), "-q"]) == 0
    assert _psnrs(reused) == _psnrs(fresh) != before
    results = pd.read_csv(reused / "results.csv")
    assert not results.stale.any()
    assert results.code.str.len().eq(16).all()
    # the check fails on both alike: the blur's two cells and its mean moved
    for folder in (reused, fresh):
        assert main(["check", str(folder), "--expected", str(expected)]) == 1


def test_reuse_stale_keeps_the_old_numbers_marked_and_check_refuses_them(
    mirror: Path, user_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    suite = _suite(user_folder, '[methods.blur]\nmethod = "my_methods:blur"')
    out = user_folder / "run"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 0
    expected = _expected_from(out, user_folder / "expected.csv")
    before = _psnrs(out)
    (user_folder / "my_methods.py").write_text(USER_METHOD.format(weight=0.3))
    sys.modules.pop("my_methods", None)

    assert main(["run", str(suite), "--out", str(out), "-q", "--reuse-stale"]) == 0
    assert "kept, marked stale (--reuse-stale)" in capsys.readouterr().out
    assert _psnrs(out) == before
    results = pd.read_csv(out / "results.csv")
    assert results.stale.all()
    table = (out / "table.md").read_text()
    assert "**stale:** 2 cell(s)" in table and "¶" in table
    capsys.readouterr()
    assert main(["check", str(out), "--expected", str(expected)]) == 1
    assert "stale" in capsys.readouterr().err


def _package_copy(tmp_path: Path) -> Path:
    """The package copied to ``tmp_path/src`` (to edit it without touching the checkout)."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "benchmark", src / "benchmark", ignore=shutil.ignore_patterns("*.pyc"))
    return src


def _run_copy(src: Path, suite: Path, out: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmark", "run", str(suite), "--out", str(out), "-q"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_edit_to_a_builtin_method_recomputes_its_cells_and_one_to_the_report_nothing(
    mirror: Path, tmp_path: Path
) -> None:
    src = _package_copy(tmp_path)
    suite = _suite(tmp_path, "[methods.median]\n\n[methods.tv]")
    out = tmp_path / "run"
    first = _run_copy(src, suite, out)
    assert "0 already done, 4 to run" in first

    def touch(relative: str) -> None:
        path = src / "benchmark" / relative
        path.write_text(path.read_text() + "\n_AN_EDIT = 1  # a statement: code changed\n")

    touch("report/tables.py")  # cannot move a number
    touch("cli/runs.py")
    touch("methods/networks.py")  # DIP's and DD's, not the classical methods'
    assert "4 already done, 0 to run" in _run_copy(src, suite, out)

    touch("methods/classical.py")
    again = _run_copy(src, suite, out)
    assert "4 finished cell(s) were computed by code that has changed since" in again
    assert "benchmark/methods/classical.py: 4" in again and "0 already done, 4 to run" in again


def test_the_fingerprint_covers_the_maths_and_not_the_report() -> None:
    dip = set(provenance.code_identity("dip")["files"])
    median = set(provenance.code_identity("median")["files"])
    assert {"benchmark/methods/fit/loop.py", "benchmark/methods/networks.py"} <= dip
    common = {"benchmark/degradations.py", "benchmark/forward.py", "benchmark/metrics.py"}
    assert common <= dip & median
    assert "benchmark/methods/classical.py" in median
    assert "benchmark/methods/networks.py" not in median
    for files in (dip, median):
        assert not any(f.startswith(("benchmark/report", "benchmark/cli")) for f in files)
        assert not any(f.startswith("benchmark/runner") for f in files)
        assert not any(f.startswith("benchmark/data") for f in files)  # a cell's parts instead


def test_a_record_without_a_fingerprint_is_stale() -> None:
    current = provenance.code_identity("median")
    assert provenance.changed_files(None)
    assert provenance.changed_files(current) == []
    assert provenance.changed_files({**current, "files": {"benchmark/gone.py": "0"}}) == [
        "benchmark/gone.py"
    ]


HASHED = '''"""A module."""

import numpy as np

SCALE = 2.0  # a constant


def scaled(x: np.ndarray) -> np.ndarray:
    """Scale x."""
    return x * SCALE
'''


@pytest.mark.parametrize(
    ("edit", "same"),
    [
        (lambda t: t.replace('"""Scale x."""', '"""Scale x by SCALE (a fixed factor)."""'), True),
        (lambda t: t.replace('"""A module."""', '"""A module.\n\nMore words."""'), True),
        (lambda t: t.replace("# a constant", "# the factor, see the paper"), True),
        (lambda t: t.replace("return x * SCALE", "return (\n        x * SCALE\n    )"), True),
        (lambda t: t.replace("\n\n\ndef", "\n\ndef"), True),
        (lambda t: t.replace('    """Scale x."""\n', ""), True),  # a docstring removed
        (lambda t: t.replace("2.0", "2.5"), False),  # a number
        (lambda t: t.replace("x * SCALE", "SCALE * x"), False),  # a statement
        (lambda t: t.replace("def scaled(x", "def scaled(y").replace("x *", "y *"), False),
    ],
)
def test_a_module_is_hashed_by_what_it_computes(tmp_path: Path, edit, same: bool) -> None:
    path = tmp_path / "m.py"
    path.write_text(HASHED)
    before = provenance.source_hash(path)
    path.write_text(edit(HASHED))
    os.utime(path, ns=(1, 1))  # the cache is keyed by time and size: another time
    assert (provenance.source_hash(path) == before) is same


def test_the_inputs_are_the_rows_and_tables_a_cell_read() -> None:
    inputs = provenance.cell_inputs("set5", "baby", "dip", "sr_x4")
    assert sorted(inputs["parts"]) == [
        "benchmark/data/presets.toml[dip.sr_x4]",
        "benchmark/data/registry.csv[set5/baby]",
    ]
    assert provenance.changed_parts(inputs) == []
    assert provenance.changed_parts({"parts": {"benchmark/data/presets.toml[dip.gone]": "x"}})
    classical = provenance.cell_inputs("set5", "baby", "bicubic", None)
    assert list(classical["parts"]) == ["benchmark/data/registry.csv[set5/baby]"]
    archive = provenance.cell_inputs("cifar10", "00003", "median", None)
    assert list(archive["parts"]) == ["benchmark/data/registry.csv[cifar10/cifar-10-python]"]


@pytest.mark.slow(seconds=50)
def test_what_a_cell_did_not_compute_with_recomputes_nothing_and_what_it_did_exactly_it(
    mirror: Path, tmp_path: Path
) -> None:
    """Docs, comments, an import moved, a new image, a new preset: 0 cells recomputed. A
    number in a used preset: its cells only. A number of a method's maths: that method's cells
    only. A number of the forward models (every cell observes through them): every cell."""
    src = _package_copy(tmp_path)
    suite = _suite(
        tmp_path,
        """
        [methods.median]

        [methods.dip]
        preset = "denoising"
        outputs = ["last"]
        fit = { iterations = 8 }
        network = { channels_down = 8, channels_up = 8, scales = 2 }
        """,
        images='["kodim01"]',
    )
    out = tmp_path / "run"
    assert "0 already done, 2 to run" in _run_copy(src, suite, out)

    def edit(relative: str, old: str, new: str) -> None:
        path = src / "benchmark" / relative
        text = path.read_text()
        assert old in text, (relative, old)
        path.write_text(text.replace(old, new, 1))

    edit("forward.py", '"""', '"""A docstring edited: nothing computes differently. ')
    edit("methods/fit/loop.py", "\n\n", "\n\n# a comment\n\n")
    edit("methods/classical.py", "\nimport ", "\n\n\nimport ")  # formatting
    edit("methods/contract.py", "Whether cells of one shape", "Whether the cells of one shape")
    # an import moved into the one function that uses it (start-up time): no other code
    edit("forward.py", "from PIL import Image\n", "")
    edit(
        "forward.py",
        "    pixels = to_uint8(image)\n",
        "    from PIL import Image\n\n    pixels = to_uint8(image)\n",
    )
    registry = src / "benchmark" / "data" / "registry.csv"
    row = registry.read_text().splitlines()[1].split(",")
    row[0] = "my_set"  # a dataset added by a user
    registry.write_text(registry.read_text() + ",".join(row) + "\n")
    presets = src / "benchmark" / "data" / "presets.toml"
    mine = presets.read_text().split("[dip.denoising]")[1].split("\n\n")[0]
    presets.write_text(presets.read_text() + "\n[dip.mine]" + mine + "\n")  # a preset added
    assert "2 already done, 0 to run" in _run_copy(src, suite, out)

    edit(
        "data/presets.toml",
        "lr = 0.01, reg_noise_std = 0.0333333",
        "lr = 0.02, reg_noise_std = 0.0333333",
    )
    again = _run_copy(src, suite, out)
    assert "benchmark/data/presets.toml[dip.denoising]: 1" in again
    assert "1 already done, 1 to run" in again

    edit("methods/classical.py", "ksize: int = 3", "ksize: int = 5")
    again = _run_copy(src, suite, out)
    assert "benchmark/methods/classical.py: 1" in again and "1 already done, 1 to run" in again

    edit(
        "forward.py",
        "return self.apply_numpy(target).astype(",
        "return 1.0 * self.apply_numpy(target).astype(",
    )
    assert "0 already done, 2 to run" in _run_copy(src, suite, out)


def test_a_degradation_in_a_module_of_its_own_recomputes_only_its_cells(
    mirror: Path, tmp_path: Path
) -> None:
    """``poisson_counts`` is registered from ``photon_noise.py``: its cells carry that file,
    the Gaussian cells beside it do not; a number changed in it recomputes its cells alone."""
    src = _package_copy(tmp_path)
    suite = _suite(tmp_path, "[methods.median]", images='["kodim01"]')
    suite.write_text(
        suite.read_text().replace(
            "levels = [25]\n",
            'levels = [25]\n\n[[degradations]]\nkind = "poisson_counts"\nlevels = [10]\n',
        )
    )
    out = tmp_path / "run"
    assert "0 already done, 2 to run" in _run_copy(src, suite, out)
    noise = src / "benchmark" / "photon_noise.py"
    noise.write_text(
        noise.read_text().replace(
            "rng.poisson(image * lam) / lam", "rng.poisson(image * lam) / lam * 1.0"
        )
    )
    again = _run_copy(src, suite, out)
    assert "benchmark/photon_noise.py: 1" in again and "1 already done, 1 to run" in again


def test_a_record_of_the_first_scheme_is_restamped_when_its_files_are_todays(
    mirror: Path, user_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    suite = _suite(user_folder, "[methods.median]\n\n[methods.tv]")
    out = user_folder / "run"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 0
    records = sorted((out / "cells").glob("*.json"))
    for number, path in enumerate(records):  # as dipbench 0.2 wrote them
        content = json.loads(path.read_text())
        content.pop("inputs"), content.pop("digest")
        files = provenance.code_identity(content["cell"]["method"])["files"]
        old = {name: provenance._legacy_hash(name) for name in files}
        fingerprint = provenance.legacy_fingerprint(content["cell"]["method"])
        if number == 0:  # computed by another forward.py than today's
            old["benchmark/forward.py"], fingerprint = "0" * 16, "1" * 16
        content["code"] = {"fingerprint": fingerprint, "files": old}
        path.write_text(json.dumps(content))
    capsys.readouterr()
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    assert f"{len(records) - 1} already done, 1 to run" in said
    for path in records:
        content = json.loads(path.read_text())
        assert content["code"]["scheme"] == provenance.SCHEME and content["inputs"]


# --- 2. runs never write into the committed reports ------------------------------------------


def _checkout_copy(tmp_path: Path) -> Path:
    """The checkout's tracked files, as on a fresh clone (a git repository of their own)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    copy = tmp_path / "clone"
    for name in filter(None, listed):
        source = REPO / name.decode()
        if source.is_file():
            (copy / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name.decode())
    for package_file in (REPO / "benchmark").rglob("*.py"):  # uncommitted work under test
        target = copy / package_file.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(package_file, target)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=copy, check=True, capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    return copy


def _reports_status(clone: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "reports"],
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_readme_example_and_a_stopped_run_leave_the_committed_reports_alone(
    mirror: Path, tmp_path: Path
) -> None:
    clone = _checkout_copy(tmp_path)
    argv = [sys.executable, "-m", "benchmark", "run", "denoising-color", "--profile", "quick"]
    argv += ["--images", "f16", "--methods", "cbm3d", "nlm", "-q", "--jobs", "1"]
    env = {**os.environ, "PYTHONPATH": str(clone)}
    for seconds in (0.5, 6.0):  # stopped at start-up, then mid-run
        process = subprocess.Popen(argv, cwd=clone, env=env, stdout=subprocess.DEVNULL)
        time.sleep(seconds)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert _reports_status(clone) == ""
    done = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "-> runs/quick/denoising-color" in done.stdout
    assert _reports_status(clone) == ""
    assert (clone / "runs" / "quick" / "denoising-color" / "table.md").is_file()
    again = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert "2 already done, 0 to run" in again.stdout


def test_a_users_suite_runs_into_the_working_folder(mirror: Path, user_folder: Path) -> None:
    suite = _suite(user_folder, "[methods.median]")
    assert main(["run", str(suite), "-q", "--device", "cpu"]) == 0  # quick: no CUDA GPU
    assert (user_folder / "runs" / "quick" / "mine" / "results.csv").is_file()


def test_publish_takes_only_a_complete_run_and_replaces_the_report_whole(
    mirror: Path, user_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    suite = _suite(user_folder, "[methods.median]\n\n[methods.tv]")
    run = user_folder / "runs" / "full" / "mine"
    reports = user_folder / "reports"
    assert main(["run", str(suite), "-q", "--profile", "full", "--out", str(run)]) == 0
    record = sorted((run / "cells").glob("*.json"))[0]
    kept = record.read_bytes()
    record.unlink()  # one cell of the grid not run
    assert main(["publish", str(run), "--reports", str(reports)]) == 1
    assert "is not a complete run" in capsys.readouterr().err
    assert not reports.exists()

    record.write_bytes(kept)
    (reports / "full" / "mine").mkdir(parents=True)
    (reports / "full" / "mine" / "notes.txt").write_text("mine")  # not a report of ours
    assert main(["publish", str(run), "--reports", str(reports)]) == 1
    assert (reports / "full" / "mine" / "notes.txt").read_text() == "mine"

    shutil.rmtree(reports / "full" / "mine")
    assert main(["publish", str(run), "--reports", str(reports)]) == 0
    published = reports / "full" / "mine"
    assert (published / "table.md").read_text() == (run / "table.md").read_text()
    assert not (published / "cells").exists()
    assert "computed by the current code" in (reports / "README.md").read_text()
    assert [p.name for p in published.parent.iterdir()] == ["mine"]  # nothing staged left


def test_committed_manifests_hold_no_machine_paths() -> None:
    for manifest in (REPO / "reports").rglob("suite.json"):
        source = json.loads(manifest.read_text())["source"]
        assert not Path(source).is_absolute(), manifest


def test_the_committed_index_says_what_each_report_is_now() -> None:
    """The committed index's line of each report is what the report's files and the current
    code say now: a report whose method code has changed since (a fingerprinted file edited,
    a docstring too) can never stay announced as "computed by the current code". When this
    fails, re-run the quick reports, or rewrite the index (``dipbench report reports
    --index``) so that it says which reports to re-run."""
    from benchmark.report import summary_line

    index = (REPO / "reports" / "README.md").read_text()
    folders = sorted(p.parent for p in (REPO / "reports").glob("*/*/suite.json"))
    assert folders
    for out in folders:
        assert f"- {summary_line(out)}\n" in index, out


def test_a_users_suite_manifest_points_to_it_relatively(mirror: Path, user_folder: Path) -> None:
    suite = _suite(user_folder, "[methods.median]")
    assert main(["run", str(suite), "-q", "--profile", "full"]) == 0
    source = json.loads((user_folder / "runs/full/mine/suite.json").read_text())["source"]
    assert source == "../../../mine.toml"


# --- 3. means compared only over the same images ---------------------------------------------


@pytest.fixture(scope="module")
def one_image(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    root = tmp_path_factory.mktemp("slice")
    # The full profile: whole images, so per-image published numbers compare (a quick run's
    # crops compare with none: tests/test_report.py).
    out = root / "full" / "denoising-color"
    argv = ["run", "denoising-color", "--profile", "full", "--images", "f16"]
    assert main([*argv, "--methods", "nlm", "--out", str(out), "-q"]) == 0
    assert main(["report", str(root), "--index"]) == 0
    return out


def test_a_one_image_slice_shows_no_mean_difference(one_image: Path) -> None:
    comparison = pd.read_csv(one_image / "paper_comparison.csv")
    means = comparison[comparison.image == "mean"]
    assert len(means) and means.difference.isna().all() and not means.complete.any()
    ran = means[means["our psnr"].notna()]
    assert len(ran) and (ran["n ours"] == 1).all() and (means["n theirs"] == 9).all()
    f16 = comparison[(comparison.image == "f16") & comparison["our psnr"].notna()]
    assert len(f16) and f16.difference.notna().all()  # per-image numbers still compare
    md = (one_image / "paper_comparison.md").read_text()
    assert "n = 1 of 9: not comparable" in md
    table = (one_image / "table.md").read_text()
    assert "(n=1 of 9: not comparable with the published mean)" in table
    index = (one_image.parents[1] / "README.md").read_text()
    assert "mean:" not in index and "f16:" in index


def test_every_table_has_the_runs_own_trivial_baseline(one_image: Path) -> None:
    results = pd.read_csv(one_image / "results.csv")
    noisy = results.trivial_psnr.iloc[0]
    assert 19 < noisy < 22  # sigma 25 on [0, 255]
    table = (one_image / "table.md").read_text()
    assert f"| trivial baseline: the degraded input (this run) | {noisy:.2f} |" in table


# --- 4. figures agree with their tables -------------------------------------------------------


class _Axes:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def plot(self, *args: object, **kwargs: object) -> None:
        self.calls.append((args, kwargs))


def test_the_oracle_star_is_the_tables_oracle() -> None:
    from benchmark.report.figures import mark_oracle
    from benchmark.runfolder import Record

    iterations = np.arange(0, 1000, 10)
    curves = {
        "curve_iteration": iterations,
        "curve_psnr_last": np.linspace(20, 28, iterations.size),
        "curve_psnr_ema": np.linspace(21, 30, iterations.size),
    }
    record = Record(
        key="k",
        cell={},
        status="ok",
        rows=[{"output": "oracle", "oracle": True, "psnr": 30.01, "ssim": 0.9}],
        info={"oracle_iteration": 692, "oracle_output": "ema"},
    )
    ax = _Axes()
    mark_oracle(ax, record, curves, "DIP")
    (x, y, style), kwargs = ax.calls[0]
    assert x == 690 and y == pytest.approx(curves["curve_psnr_ema"][69])
    assert "30.01 dB at 692" in str(kwargs["label"])


def test_one_curve_figure_per_level(mirror: Path, tmp_path: Path) -> None:
    suite = tmp_path / "levels.toml"
    suite.write_text(
        SUITE.format(
            name="levels",
            protocol="rgb",
            dataset="kodak24",
            images='["kodim01"]',
            methods=textwrap.dedent(
                """
                [methods.dd]
                preset = "denoising"
                network = { channels = 8, layers = 3 }
                fit = { iterations = 20, check_every = 10, record_every = 5 }
                """
            ),
        ).replace("levels = [25]", "levels = [15, 25, 50]")
    )
    out = tmp_path / "run"
    argv = ["run", str(suite), "--out", str(out), "-q", "--jobs", "1", "--allow-suspect"]
    assert main(argv) == 0  # 20 steps are under the noisy input: suspect, and allowed
    assert sorted(p.name for p in out.glob("curves_*.png")) == [
        "curves_gaussian_15.png",
        "curves_gaussian_25.png",
        "curves_gaussian_50.png",
    ]


# --- 6-8. partial scores, option checks, methods that cannot take the images ------------------


def test_a_misspelt_option_of_a_method_with_var_keywords_is_refused(
    mirror: Path, user_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    methods = '[methods.blur]\nmethod = "my_methods:blur"\noptions = { strenght = 0.5 }'
    suite = _suite(user_folder, methods)
    with pytest.raises(SystemExit) as refused:
        main(["run", str(suite), "-q"])
    assert refused.value.code == 2
    assert "did you mean 'strength'" in capsys.readouterr().err


def test_a_method_that_cannot_take_the_images_is_refused_when_the_suite_loads(
    mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    suite = _suite(
        tmp_path, "[methods.cbm3d]", protocol="gray", dataset="set12", images='["02_house"]'
    )
    with pytest.raises(SystemExit) as refused:
        main(["run", str(suite), "--out", str(tmp_path / "out"), "-q"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "takes color images only" in err and "set12/02_house" in err
    assert "Traceback" not in err
    assert "cbm3d" in METHODS


NO_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch must not be imported here")

sys.meta_path.insert(0, NoTorch())
from benchmark.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_report_and_check_of_stale_cells_load_no_torch(mirror: Path, user_folder: Path) -> None:
    suite = _suite(user_folder, "[methods.median]")
    out = user_folder / "run"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 0
    expected = _expected_from(out, user_folder / "expected.csv")
    for path in (out / "cells").glob("*.json"):  # computed by another classical.py
        record = Record.parse(path)
        record.code["files"]["benchmark/methods/classical.py"] = "0" * 16
        record.write(out)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for argv in (["report", str(out)], ["check", str(out), "--expected", str(expected)]):
        done = subprocess.run(
            [sys.executable, "-c", NO_TORCH, *argv], env=env, capture_output=True, text=True
        )
        assert "torch must not be imported" not in done.stderr, (argv, done.stderr)
        assert "Traceback" not in done.stderr, (argv, done.stderr)
    assert "**stale:** 2 cell(s)" in (out / "table.md").read_text()
