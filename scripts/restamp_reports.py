"""Re-stamp published reports computed under an earlier code-fingerprint scheme.

The schemes (``benchmark.code_hash``): 1 hashed whole files by their bytes (data files whole), 2
the syntax tree without docstrings, 3 that tree with the imports gathered wherever they sit, 4
(today's) that without the memory guard's definitions. The rule: a row whose fingerprint is the
one *its* scheme gives its method's *current* files was computed by the current code, so its
``code`` becomes today's fingerprint of that code (and, for a first-scheme row, its ``inputs``
the fingerprint of the data it read: its image's registry row, the preset its row names);
``provenance.json`` says what both hashed. The report's kept records (``records/<key>.json``)
are re-stamped by the same rule, their content digest written again. Any other row or record is
left as it is (and stays reported as computed by code that has changed since). Only the ``code``
and ``inputs`` columns change; every other byte of ``results.csv`` stays.

Run it *before* a change that only the new scheme sees as no change (moving an import, editing
the memory guard), with the files as the old scheme hashed them.

Usage: python scripts/restamp_reports.py reports/quick/* reports/full/*
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from benchmark.provenance import SCHEME, cell_inputs, code_identity, computed_by_todays_code
from benchmark.report.merge import KEPT
from benchmark.results_file import PROVENANCE, RESULT_COLUMNS
from benchmark.runfolder import Manifest, Record, write_json


def restamp(folder: Path) -> tuple[int, int]:
    """Re-stamp one report folder; returns (rows re-stamped, rows left)."""
    manifest = Manifest.read(folder)
    method_of = {m["key"]: m["method"] for m in manifest.methods}
    path = folder / "results.csv"
    text = path.read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    stamps = _read_stamps(folder)
    scheme_of = {f: identity.get("scheme") for f, identity in stamps["code"].items()}
    code: dict[str, dict] = {}
    inputs: dict[str, dict] = {}
    today: dict[tuple[str, str, str], dict | None] = {}  # (fingerprint, method, degradation)
    done = left = 0
    for row in rows:
        method = method_of.get(row["method"], row["method"])
        scheme = scheme_of.get(row["code"]) if "inputs" in row else None
        key = (row["code"], method, row["degradation"])
        if key not in today:
            current = (
                row["status"] == "ok"
                and scheme != SCHEME
                and computed_by_todays_code(row["code"], scheme, method, row["degradation"])
            )
            today[key] = code_identity(method, degradation=row["degradation"]) if current else None
        identity = today[key] if row["status"] == "ok" else None
        if identity is None:
            left += 1
            code[row["code"]] = stamps["code"].get(row["code"], {})
            if row.get("inputs"):
                inputs[row["inputs"]] = stamps["inputs"].get(row["inputs"], {})
            continue
        row["code"] = identity["fingerprint"]
        code[identity["fingerprint"]] = identity
        if scheme is None:
            read = cell_inputs(row["dataset"], row["image"], method, row["preset"] or None)
            row["inputs"] = read["fingerprint"]
            inputs[read["fingerprint"]] = read["parts"]
        else:
            inputs[row["inputs"]] = stamps["inputs"].get(row["inputs"], {})
        done += 1
    columns = [c for c in RESULT_COLUMNS if c in rows[0] or c == "inputs"] if rows else []
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
    if out.getvalue() != text:
        path.write_text(out.getvalue(), encoding="utf-8")
        stamps = {
            "code": {k: v for k, v in sorted(code.items()) if v},
            "inputs": {k: v for k, v in sorted(inputs.items()) if v},
        }
        write_json(folder / PROVENANCE, stamps)
    _restamp_kept(folder / KEPT)
    return done, left


def _read_stamps(folder: Path) -> dict[str, Any]:
    path = folder / PROVENANCE
    if not path.is_file():
        return {"code": {}, "inputs": {}}
    content = json.loads(path.read_text(encoding="utf-8"))
    return {"code": content.get("code", {}), "inputs": content.get("inputs", {})}


def _restamp_kept(kept: Path) -> None:
    """The report's kept records, by the same rule; each keeps its output digests."""
    for path in sorted(kept.glob("*.json")) if kept.is_dir() else []:
        record = Record.read(path)
        if record is None or not record.ok or not record.code:
            continue
        scheme = record.code.get("scheme")
        method, kind = record.cell.get("method", ""), record.cell.get("degradation")
        fingerprint = record.code.get("fingerprint", "")
        if scheme == SCHEME or not computed_by_todays_code(fingerprint, scheme, method, kind):
            continue
        write_json(path, record.restamped(code_identity(method, degradation=kind)).to_json())


def main(folders: list[str]) -> int:
    for name in folders:
        done, left = restamp(Path(name))
        print(f"{name}: {done} row(s) re-stamped, {left} left as they were")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
