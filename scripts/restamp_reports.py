"""Re-stamp published reports computed under the first code-fingerprint scheme.

The first scheme hashed whole files by their bytes (data files whole); the second hashes what
the code computes and the data parts a cell read (``benchmark.provenance``). A published report
keeps only its ``results.csv``, whose ``code`` column holds first-scheme fingerprints. The rule:
a row whose fingerprint is the one the first scheme gives its method's *current* files was
computed by the current code, so its ``code`` becomes the second scheme's fingerprint of that
code and its ``inputs`` the fingerprint of the data it read (its image's registry row, the
preset its row names); ``provenance.json`` says what both hashed. Any other row is left as it
is (and stays reported as computed by code that has changed since). Only the ``code`` and
``inputs`` columns change; every other byte of ``results.csv`` stays.

Usage: python scripts/restamp_reports.py reports/quick/*
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from benchmark.provenance import cell_inputs, code_identity, legacy_fingerprint
from benchmark.results_file import PROVENANCE, RESULT_COLUMNS
from benchmark.runfolder import Manifest, write_json


def restamp(folder: Path) -> tuple[int, int]:
    """Re-stamp one report folder; returns (rows re-stamped, rows left)."""
    manifest = Manifest.read(folder)
    method_of = {m["key"]: m["method"] for m in manifest.methods}
    path = folder / "results.csv"
    text = path.read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "inputs" in rows[0]:
        return 0, len(rows)  # nothing to re-stamp, or re-stamped already
    code: dict[str, dict] = {}
    inputs: dict[str, dict] = {}
    done = left = 0
    for row in rows:
        method = method_of.get(row["method"], row["method"])
        if row["status"] != "ok" or row["code"] != legacy_fingerprint(method):
            left += 1
            continue
        identity = code_identity(method)
        read = cell_inputs(row["dataset"], row["image"], method, row["preset"] or None)
        row["code"], row["inputs"] = identity["fingerprint"], read["fingerprint"]
        code[identity["fingerprint"]] = identity
        inputs[read["fingerprint"]] = read["parts"]
        done += 1
    columns = [c for c in RESULT_COLUMNS if c in rows[0] or c == "inputs"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    stamps = {"code": dict(sorted(code.items())), "inputs": dict(sorted(inputs.items()))}
    write_json(folder / PROVENANCE, stamps)
    return done, left


def main(folders: list[str]) -> int:
    for name in folders:
        done, left = restamp(Path(name))
        print(f"{name}: {done} row(s) re-stamped, {left} left as they were")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
