"""The report's figures: PSNR against iterations, an image grid (clean, degraded, each
method's output) and one network's snapshots as a strip and an animated GIF. Everything
comes from the run folder: the records, their arrays and the views of their observations."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from benchmark.report.files import (
    cell_arrays,
    has_curves,
    load_views,
    output_image,
    save_figure,
    save_gif,
    save_small,
)
from benchmark.report.tables import row_label
from benchmark.runfolder import GRID_IMAGES, Manifest, Record, atomic_write, cells_dir


def _network_records(out: Path, records: list[Record]) -> list[Record]:
    """Successful records of fitted networks: those with curves (any method, a user's too)."""
    return [r for r in records if r.ok and has_curves(out, r.key)]


CURVE_METRIC = {
    "gray": "PSNR (dB)",
    "rgb": "PSNR (dB)",
    "sr-y": "PSNR, whole image RGB (dB)",
}


def curve_caption(protocol: str) -> str:
    """What the curves show, against what the table shows."""
    if protocol == "sr-y":
        return (
            "curves: whole-image RGB PSNR every few steps; the table scores sr-y (Y channel, "
            "border removed), so its numbers sit above the curves; ★ the table's oracle"
        )
    return "curves: PSNR of each output every few steps (the table's metric); ★ the table's oracle"


def figure_curves(
    out: Path, meta: Manifest, records: list[Record], max_images: int = 4
) -> list[Path]:
    """PSNR against iterations of every fitted network, one figure per (degradation, level).

    Each fit's output; for a fit that reports its EMA (DIP), the EMA too and its ES-WMV pick;
    the table's oracle marked at its iteration on the curve of the output it came from.
    """
    written = []
    by_level: dict[tuple, list[Record]] = {}
    for r in _network_records(out, records):
        by_level.setdefault((r.cell["degradation"], r.cell["level"]), []).append(r)
    protocol = meta.protocol
    for (degradation, level), recs in by_level.items():
        images = list(dict.fromkeys(f"{r.cell['dataset']}/{r.cell['image']}" for r in recs))
        images = images[:max_images]
        # wide enough for the title, with room on the right for the legend (outside the axes,
        # so that it never hides a curve)
        width = max(4.2 * len(images), 6.0) + 3.2
        fig, axes = plt.subplots(1, len(images), figsize=(width, 3.6), squeeze=False)
        for ax, image in zip(axes[0], images, strict=True):
            for r in recs:
                if f"{r.cell['dataset']}/{r.cell['image']}" != image:
                    continue
                c = cell_arrays(out, r.key)
                if not len(c.get("curve_iteration", ())):
                    continue
                it, name = c["curve_iteration"], row_label(meta, r.cell["method_key"], "out")
                ax.plot(it, c["curve_psnr_last"], lw=1, label=f"{name}")
                if r.psnr("ema") is not None:
                    ax.plot(it, c["curve_psnr_ema"], lw=1, ls="--", label=f"{name} EMA")
                    es = r.info.get("es_iteration")
                    if es:
                        ax.axvline(es, color="gray", lw=0.8, ls=":", label="ES-WMV pick")
                mark_oracle(ax, r, c, name)
            ax.set_title(image.split("/")[-1], fontsize=9)
            ax.set_xlabel("iteration")
            ax.set_ylabel(CURVE_METRIC.get(protocol, f"PSNR ({protocol})"))
            ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        for ax in axes[0][1:]:  # a method missing from the first panel; its oracles stay apart
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                if label not in labels and " oracle (table:" not in label:
                    handles.append(handle)
                    labels.append(label)
        panels = (width - 3.2) / width  # the panels' share of the width; the legend's beside
        if handles:  # none when every cell failed
            fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(panels, 0.5))
        fig.suptitle(
            f"{meta.suite} ({meta.profile}): {degradation} {level:g}\n"
            + textwrap.fill(curve_caption(protocol), width=int(width * 14)),
            fontsize=9,
        )
        fig.tight_layout(rect=(0, 0, panels, 1))
        path = out / f"curves_{degradation}_{level:g}.png"
        save_figure(fig, path)
        written.append(path)
    return written


def mark_oracle(ax: Any, record: Record, curves: dict[str, np.ndarray], name: str) -> None:
    """The table's oracle: a star at its iteration on the curve of the output it came from
    (the per-step output or the EMA), labelled with the table's number."""
    info = record.info
    score = record.psnr("oracle")
    iteration = info.get("oracle_iteration")
    if score is None or iteration is None:
        return
    from_ema = info.get("oracle_output") == "ema"
    curve = curves.get("curve_psnr_ema" if from_ema else "curve_psnr_last")
    if curve is None or not len(curve):
        return
    at = int(np.abs(curves["curve_iteration"] - iteration).argmin())
    ax.plot(
        curves["curve_iteration"][at],
        curve[at],
        "k*",
        ms=8,
        label=f"{name} oracle (table: {score:.2f} dB at {iteration})",
    )


def _method_label(meta: Manifest, key: str) -> str:
    """A method's label without its output (DIP, not DIP (last))."""
    return row_label(meta, key, "out")


def _show(ax: Any, image: np.ndarray, title: str) -> None:
    """An 8-bit ``(H, W, C)`` image drawn as its exact values (a float image would be
    truncated back to 8 bits by matplotlib)."""
    ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def figure_grid(
    out: Path, meta: Manifest, records: list[Record], max_images: int = GRID_IMAGES
) -> Path | None:
    """Clean, degraded and each method's output (PSNR in the captions) for a few images of
    the suite's first degradation level, from the views of the observations the run saved."""
    # a merged report's kept cells have no pixels (benchmark.report.merge): drawn from the rest
    ok = [r for r in records if r.ok and (cells_dir(out) / f"{r.key}.png").is_file()]
    if not ok:
        return None
    first = (ok[0].cell["degradation"], ok[0].cell["level"])
    ok = [r for r in ok if (r.cell["degradation"], r.cell["level"]) == first]
    images = list(dict.fromkeys((r.cell["dataset"], r.cell["image"]) for r in ok))[:max_images]
    methods = list(dict.fromkeys(r.cell["method_key"] for r in ok))
    views = load_views(out)
    fig, axes = plt.subplots(
        len(images),
        2 + len(methods),
        squeeze=False,
        figsize=(1.9 * (2 + len(methods)), 2.1 * len(images)),
    )
    for row, (dataset, image) in zip(axes, images, strict=True):
        recs = {
            r.cell["method_key"]: r
            for r in ok
            if (r.cell["dataset"], r.cell["image"]) == (dataset, image)
        }
        view = views.get((dataset, image, *first, 0))
        if view is None:  # a run folder written before views existed
            for ax in row[:2]:
                ax.axis("off")
        else:
            _show(row[0], view.target, f"{image}: clean")
            _show(row[1], view.observation, input_caption(meta, view.psnr))
        for ax, method in zip(row[2:], methods, strict=True):
            record = recs.get(method)
            pixels = None if record is None else output_image(out, record)
            if record is None or pixels is None:
                ax.axis("off")
                continue
            default = record.default_output or "out"
            score = record.psnr(default)
            score = np.nan if score is None else score
            _show(ax, pixels, f"{row_label(meta, method, default)} {score:.2f} dB")
    fig.suptitle(
        f"{meta.suite} ({meta.profile}): {first[0]} {first[1]:g}; PSNR under protocol "
        f"{meta.protocol}",
        fontsize=9,
    )
    fig.tight_layout()
    path = out / "grid.png"
    save_small(fig, path)
    return path


def input_caption(meta: Manifest, psnr: float) -> str:
    """What the grid's degraded panel shows: a low-resolution input is shown (and scored)
    with its pixels repeated to the output's size."""
    if meta.task == "super_resolution":
        return f"LR input, pixels repeated {psnr:.2f} dB"
    return f"degraded input {psnr:.2f} dB"


def figure_snapshots(out: Path, meta: Manifest, records: list[Record]) -> list[Path]:
    """A network's output at chosen iterations for one image (the first record with
    snapshots): a strip (PNG) and an animated GIF."""
    for record in _network_records(out, records):
        data = cell_arrays(out, record.key)
        snaps = sorted(
            (int(k.split("_")[1]), v) for k, v in data.items() if k.startswith("snapshot_")
        )
        if not snaps:
            continue
        fig, axes = plt.subplots(1, len(snaps), figsize=(1.8 * len(snaps), 2.1), squeeze=False)
        for ax, (it, pixels) in zip(axes[0], snaps, strict=True):
            _show(ax, pixels, f"iteration {it}")
        cell = record.cell
        fig.suptitle(
            f"{_method_label(meta, cell['method_key'])} on {cell['image']} "
            f"({cell['degradation']} {cell['level']:g})",
            fontsize=9,
        )
        fig.tight_layout()
        strip = out / "snapshots.png"
        save_small(fig, strip)
        frames = [Image.fromarray(p[..., 0] if p.shape[2] == 1 else p) for _, p in snaps]
        gif = out / "snapshots.gif"
        save_gif(frames, gif)
        return [strip, gif]
    return []


def restore_curve(out: Path, restored: Any) -> Path:
    """``OUT.curve.png`` of ``dipbench restore --curve``: the training loss (and ES-WMV's
    running variance) against the iteration."""
    curves = restored.curves
    its = curves.get("iteration")
    path = out.with_name(out.stem + ".curve.png")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in curves.items():
        if name.startswith(("loss", "es_variance", "variance")) and its is not None:
            ax.semilogy(its, values, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (log scale)")
    ax.set_title(f"{out.name}: the fit's loss")
    ax.legend() if ax.get_legend_handles_labels()[0] else None
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return path


def restore_snapshots(out: Path, restored: Any) -> Path:
    """``OUT.snapshots.png`` of ``dipbench restore --snapshots``: the outputs at a few
    iterations, side by side."""
    shots = sorted(restored.snapshots.items())
    path = out.with_name(out.stem + ".snapshots.png")
    fig, axes = plt.subplots(1, len(shots), figsize=(2.2 * len(shots), 2.4), squeeze=False)
    for ax, (it, image) in zip(axes[0], shots, strict=True):
        ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{it}")
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return path
