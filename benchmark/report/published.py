"""The published numbers of a suite's paper (``benchmark/data/paper_numbers.csv``), renamed to
our datasets and inputs, and the image sets their means cover."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd

from benchmark import images
from benchmark.runfolder import Manifest

PAPER_NUMBERS = Path(__file__).resolve().parents[1] / "data" / "paper_numbers.csv"


PAPER_LABELS = {
    "dip": "DIP",
    "dip_ema": "DIP EMA",
    "dip_ema_2runs": "DIP EMA, 2 runs",
    "dip_released": "DIP",
    "papyan_csc": "Papyan et al.",
    "cbm3d": "CBM3D",
    "nlm": "NLM",
    "bicubic": "Bicubic",
    "srresnet": "SRResNet",
    "glasner": "Glasner et al.",
    "lapsrn": "LapSRN",
    "no_prior": "No prior",
    "tv_prior": "TV prior",
    "deep_decoder": "Deep Decoder",
    "deep_decoder_notebook": "Deep Decoder, notebook's printed step",
    "bm3d": "BM3D",
    "noisy": "Noisy input",
}


WITHIN_DB = 0.5
# A published classical number this far under ours on the same image is not a target (see
# comparison.write_comparison).
IMPLAUSIBLE_DB = 2.0


@cache
def published_mean_size(dataset: str) -> int | None:
    """How many images a published mean over ``dataset`` averages: every image of the set
    (None for a set the registry does not list image by image)."""
    names = [e.name for e in images.load_registry() if e.set == dataset and e.kind == "image"]
    return len(names) or None


def same_images(ours: set[str], dataset: str) -> bool:
    """Whether our images of ``dataset`` are every image a published mean over it covers."""
    names = {e.name for e in images.load_registry() if e.set == dataset and e.kind == "image"}
    return bool(names) and ours == names


def published(meta: Manifest) -> pd.DataFrame:
    """The published rows of ``paper_numbers.csv`` that belong to this suite, with our dataset
    names (e.g. ``set5`` becomes ``set5_x4_gt``) and, where the suite's ``paper.degradations``
    says a published method saw another input than the paper's degradation name suggests, our
    name of that input (DIP's bicubic row was computed on ``downsample_bicubic``, not on DIP's
    Lanczos ``downsample``)."""
    paper = meta.paper or {}
    if not paper.get("source"):
        return pd.DataFrame(
            columns=[
                "dataset",
                "image",
                "degradation",
                "level",
                "method",
                "psnr",
                "kind",
                "table",
                "paper_dataset",
            ]
        )
    numbers = pd.read_csv(PAPER_NUMBERS)
    numbers = numbers[
        (numbers.paper == paper["source"]) & numbers.table.isin(paper.get("tables", []))
    ]
    rename = paper.get("datasets", {})
    inputs = paper.get("degradations", {})
    rows = []
    for ours in meta.datasets:
        theirs = rename.get(ours, ours)
        part = numbers[numbers.dataset == theirs].copy()
        part["dataset"] = ours
        part["paper_dataset"] = theirs
        part["degradation"] = [
            inputs.get(m, d) for m, d in zip(part.method, part.degradation, strict=True)
        ]
        rows.append(part)
    return pd.concat(rows, ignore_index=True) if rows else numbers.iloc[:0]
