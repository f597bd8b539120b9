"""The run folder's files as dataclasses: a record, a manifest and a view survive their JSON
(or npz) unchanged, read what older versions wrote, and refuse what is not theirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.runfolder import Manifest, Record, View, cells_dir

CELL = {
    "suite": "s", "profile": "ci", "dataset": "set12", "image": "house", "task": "denoising",
    "degradation": "gaussian", "level": 25.0, "severity": None, "repetition": 0,
    "method_key": "tv", "method": "tv", "method_seed": 1,
}  # fmt: skip


def _record() -> Record:
    return Record(
        key="abc",
        cell=dict(CELL),
        status="ok",
        version="0.3.0",
        versions={"numpy": "2.0"},
        code={"fingerprint": "f", "files": {"benchmark/metrics.py": "h"}},
        rows=[{"output": "out", "oracle": False, "psnr": 31.5, "ssim": 0.9}],
        default_output="out",
        info={"iterations": 7},
        trivial={"method": "observation", "psnr": 20.1},
        suspect=["why"],
        arrays=True,
        seconds=1.25,
    )


def test_a_record_survives_its_file(tmp_path: Path) -> None:
    record = _record()
    path = record.write(tmp_path)
    assert path == cells_dir(tmp_path) / "abc.json"
    assert Record.read(path) == record
    assert "stale" not in json.loads(path.read_text())  # a fact of the reader, not the file
    assert record.psnr("out") == 31.5 and record.psnr("oracle") is None


def test_a_record_reads_older_and_newer_files(tmp_path: Path) -> None:
    """A field an older dipbench did not write takes its default; one a newer one writes is
    dropped."""
    path = tmp_path / "k.json"  # a record is filed under its key
    path.write_text(json.dumps({"key": "k", "cell": CELL, "status": "failed", "new": 1}))
    record = Record.read(path)
    assert record is not None and not record.ok
    assert record.rows == [] and record.suspect == [] and record.error == ""
    (row,) = record.result_rows()
    assert row["status"] == "failed" and np.isnan(row["psnr"])


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[1, 2]",
        json.dumps({"key": "k", "cell": CELL}),  # no status
        json.dumps({"key": "k", "cell": "house", "status": "ok"}),
        json.dumps({"key": "k", "cell": CELL, "status": "ok", "rows": {}}),
    ],
)
def test_what_is_not_a_record_reads_as_none(tmp_path: Path, content: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(content)
    assert Record.read(path) is None
    assert Record.read(tmp_path / "absent.json") is None


def test_a_manifest_survives_its_file(tmp_path: Path) -> None:
    manifest = Manifest(suite="s", profile="ci", images=["set12/house"], keys=["abc"])
    manifest.write(tmp_path)
    assert Manifest.read(tmp_path) == manifest
    with pytest.raises(ValueError, match="not a run manifest"):
        Manifest.from_json({"title": "x"})


def test_a_view_survives_its_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    view = View(
        identity={"dataset": "set12", "image": "house", "degradation": "gaussian",
                  "level": 25.0, "repetition": 0},
        target=rng.integers(0, 256, (5, 7, 1), dtype=np.uint8),
        observation=rng.integers(0, 256, (5, 7, 1), dtype=np.uint8),
        psnr=20.5,
    )  # fmt: skip
    path = tmp_path / "views" / "v.npz"
    view.write(path)
    read = View.read(path)
    assert read.key == ("set12", "house", "gaussian", 25.0, 0)
    assert read.psnr == 20.5
    np.testing.assert_array_equal(read.target, view.target)
    np.testing.assert_array_equal(read.observation, view.observation)
