"""The second round of hostile input: the tool never harms a file it did not write, never
passes a wrong number, and answers with a message (never a traceback). Each attack is a case
on a tiny grid."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmark import check, images
from benchmark.cli import main
from benchmark.runner.claims import claim, process_start

SUITE = """
name = "{name}"
title = "An attack"
task = "{task}"
protocol = "rgb"
datasets = "kodak24"
images = ["kodim01", "kodim02"]
crop = 32

[[degradations]]
kind = "{kind}"
levels = {levels}
{degradation_options}

{methods}
"""


_NUMBERS = itertools.count()


def suite_file(folder: Path, methods: str = "[methods.median]", **fields: str) -> Path:
    values = {
        "name": "attack",
        "task": "denoising",
        "kind": "gaussian",
        "levels": "[25]",
        "degradation_options": "",
    }
    values.update(fields)
    path = folder / f"suite-{next(_NUMBERS)}.toml"
    path.write_text(SUITE.format(methods=textwrap.dedent(methods), **values))
    return path


def code_of(argv: Sequence[str]) -> int:
    """The exit code of ``dipbench argv``, whether returned or raised (usage errors)."""
    try:
        return main(list(argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("hostile_methods",):
        sys.modules.pop(name, None)


# --- files of the user's -----------------------------------------------------------------------


def test_expect_never_empties_a_folder_it_did_not_make(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    users = here / "work" / "reference"
    users.mkdir(parents=True)
    (users / "thesis.tex").write_text("mine")
    suite = suite_file(here)
    argv = ["expect", str(suite), "--expected", str(here / "e.csv"), "--work", str(here / "work")]
    assert code_of([*argv, "--seeds", "1", "-q"]) == 1
    assert (users / "thesis.tex").read_text() == "mine"
    assert "was not written by dipbench expect" in capsys.readouterr().err
    assert not (here / "e.csv").exists()


def test_an_index_never_overwrites_a_readme_it_did_not_write(mirror: Path, here: Path) -> None:
    (here / "empty").mkdir()
    (here / "empty" / "README.md").write_text("my notes")
    assert code_of(["report", str(here / "empty"), "--index"]) == 1
    assert (here / "empty" / "README.md").read_text() == "my notes"

    runs = here / "runs"
    assert code_of(["run", str(suite_file(here)), "--out", str(runs / "full" / "a"), "-q"]) == 0
    (runs / "README.md").write_text("my notes")
    assert code_of(["report", str(runs), "--index"]) == 1
    assert code_of(["reproduce", "inpainting-table1", "--profile", "ci", "--out", str(runs)]) == 2
    assert (runs / "README.md").read_text() == "my notes"


@pytest.mark.parametrize("name", ["{absolute}", "../../x", "", "a/b"])
def test_a_suite_name_is_never_a_path(mirror: Path, here: Path, name: str) -> None:
    absolute = here / "elsewhere"  # an absolute name, made at run time
    name = name.format(absolute=absolute)
    before = snapshot(here)
    assert code_of(["run", str(suite_file(here, name=name)), "-q"]) == 2
    assert not (here / "runs").exists() and not absolute.exists()
    assert all(k in snapshot(here) for k in before)


def test_a_run_keeps_hidden_files_it_did_not_write(mirror: Path, here: Path) -> None:
    out = here / "out"
    assert code_of(["run", str(suite_file(here)), "--out", str(out), "-q"]) == 0
    for folder in (out, out / "cells"):
        (folder / ".thesis.tmp").write_text("mine")
        (folder / ".notes.backup.tmp").write_text("mine")
    assert code_of(["run", str(suite_file(here)), "--out", str(out), "-q"]) == 0
    for folder in (out, out / "cells"):
        assert (folder / ".thesis.tmp").read_text() == "mine"
        assert (folder / ".notes.backup.tmp").read_text() == "mine"


def test_the_mirror_is_read_only_to_the_cache(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = images.find("kodak24", "kodim03")
    copy = tmp_path / "mirror"
    (copy / "kodak24").mkdir(parents=True)
    damaged = copy / entry.file
    data = bytearray((mirror / entry.file).read_bytes())
    data[-10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setenv("DIPBENCH_DATA", str(copy))
    monkeypatch.setenv("DIPBENCH_MIRROR", str(copy))
    with pytest.raises(images.DownloadError, match="left as it is"):
        images.fetch(entry)
    assert damaged.read_bytes() == bytes(data)


def test_score_never_writes_into_its_inputs(tmp_path: Path) -> None:
    from PIL import Image

    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / folder / "x.png")
    before = (tmp_path / "gt" / "x.png").read_bytes()
    argv = ["score", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred")]
    assert code_of([*argv, "--protocol", "gray", "--out", str(tmp_path / "gt" / "x.png")]) == 2
    assert (tmp_path / "gt" / "x.png").read_bytes() == before


@pytest.mark.parametrize("kind", ["file", "foreign folder", "garbage manifest"])
def test_an_out_folder_that_is_not_a_run_folder_is_refused(
    mirror: Path, here: Path, kind: str, capsys: pytest.CaptureFixture
) -> None:
    out = here / "out"
    if kind == "file":
        out.write_text("mine")
    else:
        out.mkdir()
        (out / ("table.md" if kind == "foreign folder" else "suite.json")).write_text("[mine")
    before = snapshot(here)
    assert code_of(["run", str(suite_file(here)), "--out", str(out), "-q"]) == 2
    assert snapshot(here).items() >= before.items()
    assert "Traceback" not in capsys.readouterr().err


# --- wrong numbers ---------------------------------------------------------------------------


def _expected_row(**values: object) -> dict[str, object]:
    row = {
        "statistic": "cell",
        "suite": "s",
        "profile": "ci",
        "dataset": "d",
        "image": "i",
        "degradation": "gaussian",
        "level": 25.0,
        "method": "m",
        "output": "out",
        "n_cells": 1,
        "expected_psnr": 30.0,
        "tolerance": 0.1,
        "gated": True,
    }
    row.update(values)
    return row


def test_a_gated_nan_never_passes_the_check() -> None:
    expected = pd.DataFrame([_expected_row()])
    key = {k: v for k, v in _expected_row().items() if k in check.KEY}
    results = pd.DataFrame([{**key, "psnr": np.nan, "status": "ok"}])
    report = check.compare(results, expected)
    assert list(report[report.statistic == "cell"].verdict) == ["missing"]
    assert len(check.failed(report)) == 1
    two = pd.DataFrame(
        [
            {**key, "psnr": np.nan, "status": "ok"},
            {**key, "image": "j", "psnr": 30.0, "status": "ok"},
        ]
    )
    means = check.statistics(two)
    assert means[means.statistic == "mean"].psnr.isna().all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gated": "yes"}, "gated must be True or False"),
        ({"tolerance": float("inf")}, "not a finite number"),
        ({"level": "high"}, "is not a number"),
    ],
)
def test_an_expected_file_that_cannot_bite_is_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = tmp_path / "expected.csv"
    pd.DataFrame([_expected_row(**change)]).to_csv(path, index=False)
    with pytest.raises(check.ExpectedFileError, match=message):
        check.read_expected(path)
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(check.ExpectedFileError):
        check.read_expected(path)


@pytest.mark.parametrize(
    "methods",
    [
        '[methods.median]\nlabel = "X"\n\n[methods.tv]\nlabel = "X"',
        '[methods.median]\nlabel = "a | b"',
    ],
)
def test_labels_that_collide_or_break_a_table_are_refused(
    mirror: Path, here: Path, methods: str
) -> None:
    assert code_of(["run", str(suite_file(here, methods)), "-q"]) == 2


def test_one_run_folder_holds_one_suite_and_profile(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    out = here / "out"
    first = suite_file(here)
    assert code_of(["run", str(first), "--out", str(out), "-q"]) == 0
    before = snapshot(out)
    renamed = suite_file(here, name="renamed")
    assert code_of(["run", str(renamed), "--out", str(out), "-q"]) == 2
    assert "run into another folder" in capsys.readouterr().err
    assert code_of(["run", str(first), "--out", str(out), "-q", "--profile", "full"]) == 2
    assert code_of(["run", str(first), "--out", str(out), "-q", "--threads", "2"]) == 2
    assert snapshot(out) == before


def test_a_narrower_rerun_keeps_the_folders_other_results(mirror: Path, here: Path) -> None:
    out = here / "out"
    suite = suite_file(here, "[methods.median]\n\n[methods.tv]")
    assert code_of(["run", str(suite), "--out", str(out), "-q"]) == 0
    whole = pd.read_csv(out / "results.csv")
    assert len(whole) == 4
    argv = ["run", str(suite), "--out", str(out), "-q", "--images", "kodim01"]
    assert code_of([*argv, "--methods", "tv"]) == 0
    again = pd.read_csv(out / "results.csv")
    assert sorted(again.key) == sorted(whole.key)
    assert "kodim02" in (out / "table.md").read_text()


@pytest.mark.parametrize(
    ("kind", "levels", "options"),
    [
        ("salt_pepper", "[-0.5]", ""),
        ("gaussian", "[0]", ""),
        ("gaussian", "[25, 25.0]", ""),
        ("bernoulli", "[1.5]", ""),
    ],
)
def test_levels_that_degrade_nothing_are_refused(
    mirror: Path, here: Path, kind: str, levels: str, options: str
) -> None:
    methods = "[methods.median]" if kind != "bernoulli" else "[methods.telea]"
    task = "inpainting" if kind == "bernoulli" else "denoising"
    suite = suite_file(here, methods, kind=kind, levels=levels, task=task)
    assert code_of(["run", str(suite), "-q"]) == 2


def test_a_mask_that_removes_nothing_fails_its_cells_never_scores_inf(
    mirror: Path, here: Path
) -> None:
    suite = suite_file(here, "[methods.telea]", kind="text", levels="[100]", task="inpainting")
    out = here / "out"
    assert code_of(["run", str(suite), "--out", str(out), "-q"]) == 1
    results = pd.read_csv(out / "results.csv")
    assert (results.status == "failed").all()
    assert results.error.str.contains("leaves this image unchanged").all()


def test_unclipped_noise_runs(mirror: Path, here: Path) -> None:
    suite = suite_file(here, degradation_options="options = { clip = false }")
    out = here / "out"
    assert code_of(["run", str(suite), "--out", str(out), "-q"]) == 0
    assert (pd.read_csv(out / "results.csv").status == "ok").all()


# --- runs that die or hang with a cell ----------------------------------------------------------

EXITING = """
import sys

def leaves(observation, *, seed=0):
    sys.exit(0)
"""


def test_sys_exit_in_a_method_fails_its_cell_and_the_run_goes_on(mirror: Path, here: Path) -> None:
    (here / "hostile_methods.py").write_text(EXITING)
    methods = '[methods.leaves]\nmethod = "hostile_methods:leaves"\n\n[methods.median]'
    out = here / "out"
    argv = ["run", str(suite_file(here, methods)), "--out", str(out), "-q", "--jobs", "1"]
    assert code_of(argv) == 1
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4
    assert (results[results.method == "median"].status == "ok").all()
    assert results[results.method == "leaves"].error.str.contains("sys.exit").all()


def test_a_claim_whose_pid_now_belongs_to_another_process_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "cell.lock"
    owner = {"pid": 1, "host": platform.node(), "since": 0, "process_start": -5}
    lock.write_text(json.dumps(owner))
    assert process_start(1) is not None and process_start(1) != -5
    assert claim(lock)  # pid 1 is alive, but it is not the process that claimed the cell
    assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_network_that_pads_the_image_to_many_times_its_size_fails_before_allocating(
    mirror: Path, here: Path
) -> None:
    methods = """
    [methods.dip]
    preset = "denoising"
    network = { scales = 12, channels_down = 4, channels_up = 4, channels_skip = 2 }
    fit = { iterations = 2 }
    """
    out = here / "out"
    argv = ["run", str(suite_file(here, methods)), "--out", str(out), "-q", "--jobs", "1"]
    assert code_of([*argv, "--allow-suspect"]) == 1
    results = pd.read_csv(out / "results.csv")
    assert results.error.str.contains("would be padded to 8192x8192").all()


# --- messages, not tracebacks -----------------------------------------------------------------


def test_a_network_option_of_zero_is_a_message(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    methods = '[methods.dip]\npreset = "denoising"\nnetwork = { scales = 0 }'
    assert code_of(["run", str(suite_file(here, methods)), "-q"]) == 2
    assert "scales = 0: must be at least 1" in capsys.readouterr().err


def test_records_that_are_not_records_are_recomputed(mirror: Path, here: Path) -> None:
    out = here / "out"
    suite = suite_file(here, "[methods.median]\n[methods.tv]")
    assert code_of(["run", str(suite), "--out", str(out), "-q"]) == 0
    records = sorted((out / "cells").glob("*.json"))
    contents = ["[]", "42", "{}", '{"key": 1, "cell": 2, "status": 3}']
    for record, content in zip(records, contents, strict=True):
        record.write_text(content)
    assert code_of(["run", str(suite), "--out", str(out), "-q"]) == 0
    assert all(json.loads(r.read_text())["status"] == "ok" for r in records)


@pytest.mark.parametrize("content", ["", "suite,dataset\nx,y\n", "\x00\x01\xff" * 50])
def test_a_results_file_that_is_not_one_is_a_message(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture
) -> None:
    results = tmp_path / "results.csv"
    results.write_bytes(content.encode("latin-1"))
    expected = tmp_path / "expected.csv"
    pd.DataFrame([_expected_row()]).to_csv(expected, index=False)
    assert code_of(["check", str(results), "--expected", str(expected)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_damaged_arrays_are_named_set_aside_and_remade(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    methods = """
    [methods.dd]
    preset = "denoising"
    network = { channels = 8, layers = 3 }
    fit = { iterations = 10, check_every = 5, record_every = 5 }

    [methods.median]
    """
    out = here / "out"
    suite = suite_file(here, methods)
    argv = ["run", str(suite), "--out", str(out), "-q", "--jobs", "1", "--allow-suspect"]
    assert code_of(argv) == 0
    broken = [
        sorted((out / "cells").glob("*.npz"))[0],
        sorted((out / "cells").glob("*.png"))[0],
        sorted((out / "cells" / "views").glob("*.npz"))[0],
    ]
    for path in broken:
        path.write_bytes(path.read_bytes()[:40])
    capsys.readouterr()
    assert code_of(["report", str(out)]) == 0
    err = capsys.readouterr().err
    assert all(str(path) in err for path in broken) and "Traceback" not in err
    capsys.readouterr()
    assert code_of(argv) == 0  # the run sets aside what it cannot read and remakes it
    said = capsys.readouterr().out
    assert str(broken[0]) in said and str(broken[1]) in said
    assert broken[0].with_name(broken[0].name + ".damaged").exists()
    for path in broken:
        with Image.open(path) if path.suffix == ".png" else np.load(path) as readable:
            assert readable is not None
    assert code_of(["report", str(out)]) == 0
    assert "cannot be read" not in capsys.readouterr().err


@pytest.mark.parametrize("method", [":", "hostile_methods:", "hostile_methods:NOT_A_FUNCTION"])
def test_a_method_name_that_names_no_function_is_a_message(
    mirror: Path, here: Path, method: str, capsys: pytest.CaptureFixture
) -> None:
    (here / "hostile_methods.py").write_text("NOT_A_FUNCTION = 3\n")
    suite = suite_file(here, f'[methods.x]\nmethod = "{method}"')
    assert code_of(["run", str(suite), "-q"]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("variable", ["DIPBENCH_DATA", "DIPBENCH_MIRROR"])
def test_a_data_folder_that_is_a_file_is_a_message(
    mirror: Path, here: Path, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / "a-file").write_text("mine")
    monkeypatch.setenv("DIPBENCH_DATA", str(here / "cache"))
    monkeypatch.setenv(variable, str(here / "a-file"))
    assert code_of(["download", "kodak24"]) == 1
    assert (here / "a-file").read_text() == "mine"


def test_a_read_only_run_folder_is_a_message(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    if os.geteuid() == 0:  # root writes anywhere: make the folder a file's child instead
        (here / "ro").write_text("a file")
        out = here / "ro" / "run"
    else:
        (here / "ro").mkdir(mode=0o500)
        out = here / "ro" / "run"
    code = code_of(["run", str(suite_file(here)), "--out", str(out), "-q"])
    assert code in (1, 2)
    assert "Traceback" not in capsys.readouterr().err


# --- score reads each format at its own scale ------------------------------------------------


def _pnm(path: Path, pixels: np.ndarray, maxval: int) -> None:
    """A binary PGM (P5) with ``maxval``, written by hand: big-endian 16-bit above 255."""
    h, w = pixels.shape
    body = pixels.astype(">u2" if maxval > 255 else "u1").tobytes()
    path.write_bytes(f"P5\n# a comment\n{w} {h}\n{maxval}\n".encode() + body)


def _score(gt: Path, pred: Path, protocol: str) -> tuple[int, pd.DataFrame]:
    out = gt.parent.parent / "scores.csv"
    argv = ["score", "--gt", str(gt.parent), "--pred", str(pred.parent), "--protocol", protocol]
    code = code_of([*argv, "--out", str(out)])
    return code, pd.read_csv(out) if out.exists() else pd.DataFrame()


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    return gt, pred


@pytest.mark.parametrize("maxval", [100, 4095])
def test_a_pnm_is_read_at_its_own_maxval(folders: tuple[Path, Path], maxval: int) -> None:
    from benchmark.metrics import psnr

    rng = np.random.default_rng(1)
    clean = rng.integers(0, maxval + 1, (40, 44))
    noisy = np.clip(clean + rng.normal(0, maxval / 30, clean.shape), 0, maxval).round()
    _pnm(folders[0] / "x.pgm", clean, maxval)
    _pnm(folders[1] / "x.pgm", noisy, maxval)
    code, table = _score(folders[0] / "x.pgm", folders[1] / "x.pgm", "gray")
    assert code == 0
    truth = psnr((noisy / maxval)[..., None], (clean / maxval)[..., None])
    assert table.psnr.iloc[0] == pytest.approx(truth, abs=1e-9)


def test_a_multi_page_tiff_is_refused(folders: tuple[Path, Path]) -> None:
    import tifffile

    pages = np.zeros((2, 16, 16), np.uint8)
    tifffile.imwrite(folders[0] / "x.tif", pages[0])
    tifffile.imwrite(folders[1] / "x.tif", pages)
    code, _ = _score(folders[0] / "x.tif", folders[1] / "x.tif", "gray")
    assert code == 1


def test_an_rgb_float_tiff_is_scored(folders: tuple[Path, Path]) -> None:
    import tifffile
    from PIL import Image

    from benchmark.metrics import psnr

    rng = np.random.default_rng(2)
    clean = rng.integers(0, 256, (24, 28, 3)).astype(np.uint8)
    noisy = np.clip(clean / 255 + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    Image.fromarray(clean).save(folders[0] / "x.png")
    tifffile.imwrite(folders[1] / "x.tif", noisy, photometric="rgb")
    code, table = _score(folders[0] / "x.png", folders[1] / "x.tif", "rgb")
    assert code == 0
    assert table.psnr.iloc[0] == pytest.approx(psnr(noisy, clean / 255), abs=1e-6)


def test_exif_orientation_is_applied_as_pillow_does(folders: tuple[Path, Path]) -> None:
    from PIL import Image, ImageOps

    rng = np.random.default_rng(3)
    upright = rng.integers(0, 256, (32, 48, 3)).astype(np.uint8)
    for orientation in range(2, 9):
        stored = Image.fromarray(upright)
        exif = stored.getexif()
        exif[0x0112] = orientation
        path = folders[1] / f"o{orientation}.png"
        stored.save(path, exif=exif)
        from benchmark.score_files import read_for_scoring

        read = read_for_scoring(path)
        with Image.open(path) as im:
            expected = np.asarray(ImageOps.exif_transpose(im)) / 255
        np.testing.assert_array_equal(read.pixels, expected)
        assert f"EXIF orientation {orientation} applied" in read.notes


def test_a_32_bit_bmp_with_a_padding_byte_is_scored(folders: tuple[Path, Path]) -> None:
    import cv2
    from PIL import Image

    rng = np.random.default_rng(4)
    clean = rng.integers(0, 256, (20, 20, 3)).astype(np.uint8)
    Image.fromarray(clean).save(folders[0] / "x.png")
    bgra = np.dstack([clean[..., ::-1], np.zeros((20, 20), np.uint8)])
    assert cv2.imwrite(str(folders[1] / "x.bmp"), bgra)
    code, table = _score(folders[0] / "x.png", folders[1] / "x.bmp", "rgb")
    assert code == 0 and np.isinf(table.psnr.iloc[0])


CRASHING = """
import ctypes
import os
import time


def dies(observation, *, seed=0):
    os._exit(3)


def segfaults(observation, *, seed=0):
    ctypes.string_at(0)


def hangs(observation, *, seed=0):
    time.sleep(600)
"""


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_every_cell_is_isolated_whatever_the_jobs(mirror: Path, here: Path, jobs: str) -> None:
    (here / "hostile_methods.py").write_text(CRASHING)
    methods = "\n".join(
        f'[methods.{name}]\nmethod = "hostile_methods:{name}"'
        for name in ("dies", "segfaults", "hangs")
    )
    suite = suite_file(here, methods + "\n[methods.median]\n[methods.tv]")
    out = here / "out"
    # 8 s: a median cell through a fresh worker took over 3 s on a loaded 2-core machine
    argv = ["run", str(suite), "--out", str(out), "-q", "--jobs", jobs, "--cell-timeout", "8"]
    assert code_of(argv) == 1
    results = pd.read_csv(out / "results.csv").set_index(["image", "method"])
    assert len(results) == 10  # every cell has its record
    causes = {
        "dies": "exited with code 3",
        "segfaults": "killed by signal SIGSEGV",
        "hangs": "ran past the cell time-out of 8 s",
    }
    for (_, method), row in results.iterrows():
        if method in causes:
            assert row.status == "failed" and causes[method] in row.error
        else:
            assert row.status == "ok"
    assert code_of(["report", str(out)]) == 0


FULL_DISK = """
import errno, os, sys
from benchmark.cli import main
from benchmark import runfolder

replaced = 0
real_replace = os.replace


def fills_the_disk(source, target):  # the disk fills up after {after} files were written
    global replaced
    replaced += 1
    if replaced > {after}:
        raise OSError(errno.ENOSPC, "No space left on device", str(source))
    real_replace(source, target)


runfolder.os = type(os)("os_on_a_full_disk")
runfolder.os.__dict__.update(os.__dict__, replace=fills_the_disk)
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("after", [0, 3])
def test_a_full_disk_is_a_message_and_a_rerun_completes(
    mirror: Path, here: Path, after: int
) -> None:
    """Every write of the run folder goes through ``runfolder.atomic_write``; the disk fills
    after ``after`` of them (in-process cells, so the filled disk reaches the cells too)."""
    suite = suite_file(here, "[methods.median]\n[methods.tv]")
    out = here / "out"
    argv = ["run", str(suite), "--out", str(out), "-q", "--executor", "inline"]
    script = here / "full_disk.py"
    script.write_text(FULL_DISK.format(after=after))
    done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
    assert not list(out.rglob("*.tmp"))  # no half-written file is left behind
    for path in (out / "cells").glob("*.json"):
        assert json.loads(path.read_text())["status"] in ("ok", "failed")
    assert code_of(argv) == 0  # the disk has room again: the run completes
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4 and (results.status == "ok").all()


WANDERING_METHOD = """
import os


def wander(observation, *, seed=0):
    os.makedirs("elsewhere", exist_ok=True)
    os.chdir("elsewhere")  # and never back
    return observation.y
"""


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_a_method_that_changes_the_working_folder_moves_no_record(
    mirror: Path, here: Path, executor: str
) -> None:
    (here / "wandering_methods.py").write_text(WANDERING_METHOD)
    suite = suite_file(here, '[methods.wander]\nmethod = "wandering_methods:wander"')
    argv = ["run", str(suite), "--out", "run", "-q", "--jobs", "1", "--executor", executor]
    try:
        assert code_of(argv) == 0
    finally:
        sys.modules.pop("wandering_methods", None)
    assert os.getcwd() == str(here)
    assert len(list((here / "run" / "cells").glob("*.json"))) == 2  # one worker, two cells
    assert not (here / "elsewhere" / "run").exists()


MEDDLING_METHOD = """
import json, os, random, sys, warnings

import numpy as np
import torch


def meddle(observation, *, seed=0):
    seen = {
        "dtype": str(torch.get_default_dtype()),
        "grad": torch.is_grad_enabled(),
        "matmul": torch.get_float32_matmul_precision(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cwd": os.getcwd(),
        "env": os.environ.get("MEDDLED"),
        "path": sys.path[:2],
        "umask": os.umask(0o077),
        "warnings": len(warnings.filters),
        "draws": [random.random(), float(np.random.random()), float(torch.rand(1))],
    }
    with open(os.environ["SEEN_LOG"], "a") as log:
        log.write(json.dumps(seen) + "\\n")
    torch.set_default_dtype(torch.float64)  # and every other switch a method can reach
    torch.set_grad_enabled(False)
    torch.set_float32_matmul_precision("medium")
    torch.use_deterministic_algorithms(True)
    os.makedirs("elsewhere", exist_ok=True)
    os.chdir("elsewhere")
    os.environ["MEDDLED"] = "yes"
    sys.path.insert(0, "/nowhere")
    warnings.simplefilter("ignore")
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    return observation.y
"""


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_a_method_that_changes_its_process_changes_no_later_cell(
    mirror: Path, here: Path, monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    """Each cell in a reused worker (or in the caller's process) starts from the state its
    unit found: the second cell sees what the first saw, and the caller gets its state back."""
    (here / "meddling_methods.py").write_text(MEDDLING_METHOD)
    monkeypatch.setenv("SEEN_LOG", str(here / "seen.jsonl"))
    suite = suite_file(here, '[methods.meddle]\nmethod = "meddling_methods:meddle"')
    argv = ["run", str(suite), "--out", "run", "-q", "--jobs", "1", "--executor", executor]
    try:
        assert code_of(argv) == 0
    finally:
        sys.modules.pop("meddling_methods", None)
    first, second = (json.loads(line) for line in (here / "seen.jsonl").read_text().splitlines())
    assert first == second
    assert (first["dtype"], first["grad"], first["env"]) == ("torch.float32", True, None)
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()
    assert not torch.are_deterministic_algorithms_enabled() and os.getcwd() == str(here)
    assert "MEDDLED" not in os.environ and "/nowhere" not in sys.path


# --- the third round (issue 38): checks of meaning, one-line messages, restore's files -------


def _tiny_results(here: Path) -> Path:
    out = here / "run"
    assert code_of(["run", str(suite_file(here)), "--out", str(out), "-q"]) == 0
    return out


def _expected_for(out: Path, path: Path) -> Path:
    results = pd.read_csv(out / "results.csv")
    check.derive_expected(results, {"seed-1": results}, {"t": "1"}).to_csv(path, index=False)
    return path


def test_a_suite_the_expected_file_does_not_know_fails_the_check(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    out = _tiny_results(here)
    expected = _expected_for(out, here / "expected.csv")
    table = pd.read_csv(expected)
    table.assign(suite="another").to_csv(expected, index=False)
    capsys.readouterr()
    assert code_of(["check", str(out), "--expected", str(expected)]) == 1
    assert "a suite the expected file does not know" in capsys.readouterr().err
    assert code_of(["check", str(out), "--expected", str(expected), "--allow-new"]) == 1  # missing
    table.to_csv(expected, index=False)
    assert code_of(["check", str(out), "--expected", str(expected)]) == 0


@pytest.mark.parametrize(("column", "value"), [("psnr", "abc"), ("level", "x")])
def test_a_results_file_with_words_for_numbers_is_one_line(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture, column: str, value: str
) -> None:
    out = _tiny_results(here)
    expected = _expected_for(out, here / "expected.csv")
    results = pd.read_csv(out / "results.csv")
    results[column] = results[column].astype(object)
    results.loc[0, column] = value
    (here / "loose").mkdir()
    results.to_csv(here / "loose" / "results.csv", index=False)  # no records beside it
    capsys.readouterr()
    assert code_of(["check", str(here / "loose"), "--expected", str(expected)]) == 2
    err = capsys.readouterr().err
    assert f"its {column} '{value}' (line 2) is not a number" in err and "Traceback" not in err


def test_check_update_never_overwrites_a_results_file(mirror: Path, here: Path) -> None:
    out = _tiny_results(here)
    before = (out / "results.csv").read_bytes()
    argv = ["check", str(out), "--update", "--variants", str(out)]
    assert code_of([*argv, "--expected", str(out / "results.csv")]) == 2
    assert (out / "results.csv").read_bytes() == before


def test_a_report_before_any_cell_and_a_record_without_its_cell_are_one_line(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    out = _tiny_results(here)
    records = sorted((out / "cells").glob("*.json"))
    content = json.loads(records[0].read_text())
    content["cell"] = {}
    records[0].write_text(json.dumps(content))
    assert code_of(["report", str(out)]) == 0  # left out, named
    assert "Traceback" not in capsys.readouterr().err
    for path in [*records, out / "results.csv"]:  # as while a run is on its first cell
        path.unlink()
    assert code_of(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert "has no finished cell yet" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "text",
    [b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", b'name = "caf\xe9"\n'],
    ids=["nested-5000-deep", "latin-1"],
)
def test_a_suite_file_that_is_not_a_suite_is_one_line(
    here: Path, capsys: pytest.CaptureFixture, text: bytes
) -> None:
    (here / "bad.toml").write_bytes(text)
    assert code_of(["run", str(here / "bad.toml"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "Traceback" not in err


@pytest.mark.parametrize("levels", ["[inf]", "[1e308]", "[nan]", "[25, 25.0000000001]"], ids=str)
def test_levels_that_are_no_level_or_one_level_twice_are_refused(
    here: Path, capsys: pytest.CaptureFixture, levels: str
) -> None:
    assert code_of(["run", str(suite_file(here, levels=levels)), "-q"]) == 2
    err = capsys.readouterr().err
    assert "level" in err and "Traceback" not in err


def test_publish_in_an_ascii_locale_writes_its_report(mirror: Path, here: Path) -> None:
    out = _tiny_results(here)
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-m", "benchmark", "publish", str(out), "--reports", "reports"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (here / "reports" / "README.md").is_file()


def test_score_refuses_the_ground_truth_as_the_prediction(
    here: Path, capsys: pytest.CaptureFixture
) -> None:
    (here / "gt").mkdir()
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(here / "gt" / "x.png")
    argv = ["score", "--gt", "gt", "--pred", "gt", "--protocol", "gray"]
    assert code_of(argv) == 2
    assert "the same folder" in capsys.readouterr().err
    (here / "pred").mkdir()
    (here / "pred" / "x.png").symlink_to(here / "gt" / "x.png")
    assert code_of(["score", "--gt", "gt", "--pred", "pred", "--protocol", "gray"]) == 1
    assert "hold the same file" in capsys.readouterr().err


def _noisy_png(here: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(here / "in.png")
    return here / "in.png"


@pytest.mark.parametrize(
    "extra",
    [
        ["--task", "denoising", "--sigma", "-5"],
        ["--task", "denoising", "--sigma", "inf"],
        ["--task", "denoising", "--factor", "4"],
        ["--task", "denoising", "--mask", "in.png"],
        ["--task", "super_resolution", "--sigma", "25"],
    ],
    ids=" ".join,
)
def test_restore_refuses_settings_that_mean_nothing(
    here: Path, capsys: pytest.CaptureFixture, extra: list[str]
) -> None:
    _noisy_png(here)
    argv = ["restore", "in.png", "--out", "out.png", "--method", "median", *extra]
    assert code_of(argv) == 2
    assert not (here / "out.png").exists() and "Traceback" not in capsys.readouterr().err


def test_restore_refuses_a_mask_with_nothing_to_fill(
    here: Path, capsys: pytest.CaptureFixture
) -> None:
    _noisy_png(here)
    Image.fromarray(np.full((24, 24), 255, np.uint8)).save(here / "mask.png")
    argv = ["restore", "in.png", "--task", "inpainting", "--mask", "mask.png", "--out", "o.png"]
    assert code_of([*argv, "--method", "telea"]) == 2
    assert "nothing to inpaint" in capsys.readouterr().err


def test_restore_writes_beside_its_output_only_what_it_wrote_before(
    here: Path, capsys: pytest.CaptureFixture
) -> None:
    _noisy_png(here)
    argv = ["restore", "in.png", "--task", "denoising", "--method", "median", "--out", "o.png"]
    (here / "theirs.json").write_text("a user's file")
    (here / "o.png.json").symlink_to(here / "theirs.json")
    assert code_of(argv) == 2  # a sidecar through a link
    assert (here / "theirs.json").read_text() == "a user's file"
    (here / "o.png.json").unlink()
    (here / "o.png.json").write_text("a user's notes")
    assert code_of(argv) == 2  # a sidecar of someone else's
    (here / "o.png.json").unlink()
    assert code_of(argv) == 0
    sidecar = json.loads((here / "o.png.json").read_text())
    # median uses no torch threads (a network method's sidecar has them: tests/test_restore.py)
    assert sidecar["threads"] is None and "torch" in sidecar["versions"]
    assert sidecar["files"] == ["o.png.json"]
    assert sidecar["output_sha256"] == hashlib.sha256((here / "o.png").read_bytes()).hexdigest()
    (here / "o.curve.png").write_bytes(b"a user's figure")
    assert code_of([*argv, "--curve"]) == 2  # not one it wrote
    assert (here / "o.curve.png").read_bytes() == b"a user's figure"
    assert code_of(argv) == 0  # what it wrote before, it may write again


def test_two_restores_to_one_output_do_not_mix(here: Path, capsys: pytest.CaptureFixture) -> None:
    _noisy_png(here)
    lock = here / ".o.png.restoring"
    lock.write_text(str(os.getppid()))  # a live process holds it
    argv = ["restore", "in.png", "--task", "denoising", "--method", "median", "--out", "o.png"]
    assert code_of(argv) == 2
    assert "is writing" in capsys.readouterr().err and not (here / "o.png").exists()
    lock.write_text("999999999")  # a dead one: taken over
    assert code_of(argv) == 0 and not lock.exists()


@pytest.mark.parametrize(
    "fields",
    [{"levels": str([round(1 + i / 1000, 3) for i in range(100_000)])}, {"name": "reps"}],
    ids=["a hundred thousand levels", "a hundred million repetitions"],
)
def test_a_huge_grid_is_counted_and_refused_before_it_is_planned(
    here: Path, capsys: pytest.CaptureFixture, fields: dict[str, str]
) -> None:
    path = suite_file(here, "[methods.median]\n\n[methods.tv]", **fields)
    if fields.get("name") == "reps":
        text = path.read_text().replace("title =", "repetitions = 100000000\ntitle =")
        path.write_text(text)
    assert code_of(["run", str(path), "-q"]) == 2  # counted: planned, it would not end
    err = capsys.readouterr().err
    assert "more than 20,000" in err and "--yes" in err


# --- images read as written ------------------------------------------------------------------


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (40, 40), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["miniswhite", "palette", "gray+alpha", "16-bit"])
def test_an_image_is_scored_as_the_picture_its_file_encodes(
    here: Path, capsys: pytest.CaptureFixture, kind: str
) -> None:
    import tifffile

    clean = _pixels()
    (here / "gt").mkdir(), (here / "pred").mkdir()
    Image.fromarray(clean).save(here / "gt" / "x.png")
    if kind == "miniswhite":
        tifffile.imwrite(here / "pred" / "x.tif", 255 - clean, photometric="miniswhite")
    elif kind == "palette":
        rgb = Image.fromarray(np.stack([clean] * 3, -1))
        rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(here / "pred" / "x.tif")
    elif kind == "gray+alpha":
        Image.fromarray(np.stack([clean, np.full_like(clean, 255)], -1), "LA").save(
            here / "pred" / "x.png"
        )
    else:
        Image.fromarray(clean.astype(np.uint16) * 257).save(here / "pred" / "x.png")
    assert code_of(["score", "--gt", "gt", "--pred", "pred", "--protocol", "gray"]) == 0
    assert " inf " in capsys.readouterr().out  # the very picture (it scored 4.85 dB read raw)


def test_a_truncated_jpeg_is_not_scored(here: Path, capsys: pytest.CaptureFixture) -> None:
    (here / "gt").mkdir(), (here / "pred").mkdir()
    Image.fromarray(_pixels()).save(here / "gt" / "x.png")
    Image.fromarray(_pixels()).save(here / "pred" / "x.jpg", quality=95)
    whole = (here / "pred" / "x.jpg").read_bytes()
    (here / "pred" / "x.jpg").write_bytes(whole[: len(whole) // 2])
    assert code_of(["score", "--gt", "gt", "--pred", "pred", "--protocol", "gray"]) == 1
    assert "x.jpg: not a readable image (image file is truncated" in capsys.readouterr().err


def test_a_gray_image_with_alpha_is_restored_gray(here: Path) -> None:
    clean = _pixels()
    Image.fromarray(np.stack([clean, np.full_like(clean, 255)], -1), "LA").save(here / "in.png")
    argv = ["restore", "in.png", "--task", "denoising", "--method", "median", "--out", "o.png"]
    assert code_of(argv) == 0
    with Image.open(here / "o.png") as out:
        assert out.mode == "L"
