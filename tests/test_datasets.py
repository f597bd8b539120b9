"""Datasets from a user's file (the recipe of docs/design.md): a folder of images becomes a set
of the user's registry file, a suite names that file, its cells read the images verified, and
adding images recomputes nothing while changing one recomputes exactly its cells."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import datasets, images
from benchmark.cli import main

SUITE = """
name = "my-photos"
title = "My photos"
task = "denoising"
protocol = "rgb"
registry = "my_images.csv"
datasets = "photos"
crop = 40

[[degradations]]
kind = "gaussian"
levels = [25]

[methods.median]
"""


def _cells(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}


def _run(out: Path) -> None:
    assert main(["run", "mine.toml", "--profile", "full", "--out", str(out), "-q"]) == 0


@pytest.fixture
def user_folder(tmp_path: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's folder: two photos, their registry file, a suite that names it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("kodim01", "kodim02"):
        shutil.copy(mirror / "kodak24" / f"{name}.png", photos)
    (tmp_path / "mine.toml").write_text(textwrap.dedent(SUITE))
    monkeypatch.chdir(tmp_path)
    assert main(["add-dataset", "photos", "photos", "--registry", "my_images.csv"]) == 0
    return tmp_path


def test_a_folder_becomes_a_set_read_as_the_packaged_images_are(user_folder: Path) -> None:
    rows = pd.read_csv("my_images.csv")
    assert rows.url.tolist() == ["photos/kodim01.png", "photos/kodim02.png"]  # relative
    mine = datasets.load_image("photos", "kodim01", "my_images.csv")
    assert np.array_equal(mine, images.load_image("kodak24", "kodim01"))  # the same file
    _run(user_folder / "run")
    table = pd.read_csv("run/results.csv")
    assert table.status.tolist() == ["ok", "ok"] and set(table.dataset) == {"photos"}


def test_adding_images_recomputes_nothing_and_changing_one_recomputes_its_cells(
    user_folder: Path, mirror: Path
) -> None:
    out = user_folder / "run"
    _run(out)
    before = _cells(out)
    more = user_folder / "more"
    more.mkdir()
    shutil.copy(mirror / "kodak24" / "kodim03.png", more)
    assert main(["add-dataset", "more", "more", "--registry", "my_images.csv"]) == 0
    _run(out)
    assert _cells(out) == before  # another set in the file: no cell of this suite moves
    # the user replaces a photo and writes its set's rows again
    shutil.copy(mirror / "kodak24" / "kodim03.png", user_folder / "photos" / "kodim02.png")
    rows = pd.read_csv("my_images.csv", dtype=str, keep_default_na=False)
    rows[rows.set != "photos"].to_csv("my_images.csv", index=False)
    assert main(["add-dataset", "photos", "photos", "--registry", "my_images.csv"]) == 0
    _run(out)
    after = _cells(out)
    changed = {name for name in after if after[name] != before.get(name)}
    assert len(changed) == 1  # kodim02's cell only, recomputed on the new pixels
    table = pd.read_csv(out / "results.csv").set_index("image")
    assert table.stale.eq(False).all()


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        ("set,name\nphotos,a\n", "has no column(s) file, width"),
        (None, "names packaged set(s) kodak24"),
    ],
)
def test_a_registry_file_that_cannot_be_used_is_one_line(
    user_folder: Path, rows: str | None, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if rows is None:
        table = pd.read_csv("my_images.csv", dtype=str, keep_default_na=False)
        table.assign(set="kodak24").to_csv("my_images.csv", index=False)
        Path("mine.toml").write_text(textwrap.dedent(SUITE).replace('"photos"', '"kodak24"'))
    else:
        Path("my_images.csv").write_text(rows)
    with pytest.raises(SystemExit):
        main(["run", "mine.toml", "--out", "run", "-q"])
    error = capsys.readouterr().err
    assert said in error and "Traceback" not in error
    assert not Path("run").exists()


def test_add_dataset_refuses_a_packaged_name_and_a_set_it_has(
    user_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, said in (
        (["add-dataset", "kodak24", "photos", "--registry", "my_images.csv"], "packaged set"),
        (["add-dataset", "photos", "photos", "--registry", "my_images.csv"], "already"),
    ):
        before = Path("my_images.csv").read_bytes()
        with pytest.raises(SystemExit):
            main(argv)
        assert said in capsys.readouterr().err
        assert Path("my_images.csv").read_bytes() == before
