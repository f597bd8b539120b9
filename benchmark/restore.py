"""Restoring your own image (``dipbench restore``): no ground truth, the benchmark's code path.

The observation is built as a suite cell's is (:class:`~benchmark.degradations.Observation`
with the task's declared parameters, the mask, the factor) and the method runs through the
same registry call (:func:`benchmark.methods.run`), so restoring a synthetically degraded
standard image gives the PSNR of the corresponding benchmark cell with the same seed. The
output is chosen by a rule that needs no clean image (:func:`choose_output`), and everything
needed to reproduce it is written beside it (:func:`sidecar`).

Examples
--------
>>> import numpy as np
>>> noisy = np.random.default_rng(0).random((16, 16, 1)).astype(np.float32)
>>> observation = observation_for(noisy, "denoising", sigma=25)
>>> observation.params["sigma"] == 25 / 255
True
>>> result = restore_image(observation, "median", seed=0)
>>> result.output, result.image.shape
('out', (16, 16, 1))
"""

from __future__ import annotations

import hashlib
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmark.degradations import Observation
from benchmark.forward import Identity, LanczosDownsampling, Masking
from benchmark.score_files import ImageFileError, read_for_scoring

OUTPUT_SUFFIXES = (".png", ".tif", ".tiff")

# What each output is, for the sidecar and the message (no output here uses a clean image).
OUTPUT_REASONS = {
    "es": "ES-WMV detected a stop (the running variance of the outputs stopped improving)",
    "ema": "the exponential moving average of the outputs (0.99)",
    "last": "the output of the final weights, after the last iteration",
    "best_loss": "the step with the lowest training loss (the Deep Decoder's rule)",
    "out": "the method's output",
}


@dataclass(frozen=True)
class InputImage:
    """A user's image: float32 ``(H, W, C)`` pixels in [0, 1] and how it was stored."""

    pixels: np.ndarray
    depth: str  # "8", "16" or "float": the output is written the same way
    sha256: str
    notes: tuple[str, ...] = ()


@dataclass
class Restored:
    """A restoration without ground truth: the chosen output and why."""

    image: np.ndarray
    output: str
    reason: str
    info: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


def read_input(path: Path) -> InputImage:
    """Read an image file at its own scale (8-bit, 16-bit, float TIFF; gray or RGB).

    Raises
    ------
    ImageFileError
        The file cannot be read as an image, naming the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    read = read_for_scoring(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            kind = tif.pages[0].dtype
        depth = "float" if kind.kind == "f" else "16" if kind.itemsize == 2 else "8"
    else:
        with Image.open(path) as im:
            depth = "16" if im.mode.startswith("I;16") or im.mode == "I" else "8"
    return InputImage(
        read.pixels.astype(np.float32),
        depth,
        hashlib.sha256(path.read_bytes()).hexdigest(),
        read.notes,
    )


def read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """An inpainting mask file: white (above half scale) = known. Returns float32 ``(H, W, 1)``.

    Raises
    ------
    ImageFileError
        Unreadable, another size than the image, or no known pixel.
    """
    pixels = read_input(path).pixels
    if pixels.shape[:2] != tuple(shape[:2]):
        raise ImageFileError(
            f"{Path(path).name}: the mask is {pixels.shape[1]}x{pixels.shape[0]}, the image "
            f"{shape[1]}x{shape[0]}; save the mask at the image's size"
        )
    mask = (pixels.mean(axis=2, keepdims=True) > 0.5).astype(np.float32)
    if not mask.any():
        raise ImageFileError(
            f"{Path(path).name}: the mask has no known pixel (white = known, black = to fill)"
        )
    if mask.all():
        raise ValueError(
            f"{Path(path).name}: the mask marks every pixel known (white = known, black = to "
            "fill): there is nothing to inpaint"
        )
    return mask


def observation_for(
    pixels: np.ndarray,
    task: str,
    *,
    mask: np.ndarray | None = None,
    factor: int | None = None,
    sigma: float | None = None,
) -> Observation:
    """The observation a suite cell of ``task`` would hold for these pixels.

    ``sigma`` (0-255 scale) declares Gaussian noise of that level (denoisers that need a level
    estimate it from the image when it is None); ``mask`` (1 = known) is applied to the
    pixels, so what lies under the holes never reaches a method; ``factor`` is the
    super-resolution factor (DIP's Lanczos-2 downsampler is the forward model).
    """
    if task == "denoising":
        params = {} if sigma is None else {"kind": "gaussian", "sigma": sigma / 255}
        return Observation(pixels, Identity(), params)
    if task == "inpainting":
        if mask is None:
            raise ValueError("inpainting needs a mask (--mask FILE, white = known)")
        return Observation(pixels * mask, Masking(mask), {"kind": "mask"})
    if task == "super_resolution":
        if not factor or factor < 2:
            raise ValueError("super-resolution needs a factor of at least 2 (--factor N)")
        params = {"kind": "downsample", "factor": factor, "kernel": "lanczos"}
        return Observation(pixels, LanczosDownsampling(factor), params)
    raise ValueError(f"unknown task {task!r}; tasks: denoising, inpainting, super_resolution")


def choose_output(task: str, default: str, outputs: dict[str, Any], info: dict[str, Any]) -> str:
    """The output to keep without ground truth, as the papers and ES-WMV recommend: the
    preset's own output (``default``: DIP's ``last`` after the preset's iterations for
    inpainting and super-resolution, the Deep Decoder's ``best_loss``, a classical method's
    ``out``), except that DIP denoising stops where ES-WMV detects a stop, keeping its EMA when
    ES-WMV detects nothing."""
    detected = info.get("es_stop_iteration") is not None
    if task == "denoising" and default == "ema" and "es" in outputs and detected:
        return "es"
    return default


def restore_image(
    observation: Observation,
    method: str,
    *,
    seed: int = 0,
    output: str | None = None,
    **options: Any,
) -> Restored:
    """Run ``method`` on ``observation`` through the registry and keep one output: ``output``
    if given, else :func:`choose_output`'s. ``options`` go to the method (``preset``,
    ``fit_options``, ``device``, ``progress`` for a network method)."""
    from benchmark.methods import run

    started = time.perf_counter()
    result = run(method, observation, seed=seed, **options)
    seconds = time.perf_counter() - started
    chosen = output or choose_output(observation.task, result.default, result.outputs, result.info)
    if chosen not in result.outputs or chosen == "oracle":
        known = ", ".join(o for o in result.outputs if o != "oracle")
        raise ValueError(f"{method} has no output {chosen!r} without a clean image; it has {known}")
    reason = OUTPUT_REASONS.get(chosen, chosen)
    if chosen == "es" and result.info.get("es_stop_iteration", 0) is None:
        reason = "ES-WMV detected no stop within the iterations: its output is the last one"
    if chosen == "ema" and output is None and "es" in result.outputs:
        reason = "ES-WMV detected no stop within the iterations: " + OUTPUT_REASONS["ema"]
    return Restored(
        result.outputs[chosen], chosen, reason, dict(result.info), result.curves,
        result.snapshots, seconds,
    )  # fmt: skip


def write_output(path: Path, image: np.ndarray, depth: str) -> None:
    """Write ``image`` as ``path``'s format at the input's depth: 8 or 16-bit PNG/TIFF, or a
    float32 TIFF for a float input (a PNG holds no floats: it is then 16-bit). The file is
    written whole or not at all."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"{path.name}: write a .png or .tif(f) (got {path.suffix or 'no suffix'})")
    pixels = np.clip(image, 0, 1)
    pixels = pixels[..., 0] if pixels.shape[2] == 1 else pixels
    tiff = path.suffix.lower() != ".png"
    if depth == "float" and tiff:
        data = pixels.astype(np.float32)
    elif depth in ("16", "float"):
        data = np.round(pixels * 65535).astype(np.uint16)
    else:
        data = np.round(pixels * 255).astype(np.uint8)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        if tiff:
            import tifffile

            tifffile.imwrite(tmp, data, photometric="minisblack" if data.ndim == 2 else "rgb")
        elif data.dtype == np.uint16 and data.ndim == 3:
            import cv2

            if not cv2.imwrite(str(tmp), data[..., ::-1]):  # Pillow writes no 16-bit RGB
                raise OSError(f"cannot write {path}")
        else:
            Image.fromarray(data).save(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def peak_memory_bytes(device: str) -> int:
    """The process's peak memory: the device's for CUDA, the resident set's otherwise."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated())
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def sidecar(
    source: Path,
    image: InputImage,
    restored: Restored,
    *,
    method: str,
    task: str,
    seed: int,
    settings: dict[str, Any],
    device: str,
) -> dict[str, Any]:
    """What ``OUTPUT.json`` holds: enough to reproduce the result and to judge it."""
    from benchmark import __version__
    from benchmark.provenance import code_identity

    info = {k: v for k, v in restored.info.items() if _is_plain(v)}
    return {
        "input": {"file": str(source), "sha256": image.sha256, "depth": image.depth},
        "task": task,
        "method": method,
        "seed": seed,
        "settings": settings,
        "output": restored.output,
        "stopping": {
            "output": restored.output,
            "reason": restored.reason,
            "iterations": info.get("iterations"),
            "es_stop_iteration": info.get("es_stop_iteration"),
            "es_iteration": info.get("es_iteration"),
        },
        "info": info,
        "device": device,
        "seconds": round(restored.seconds, 2),
        "peak_memory_bytes": peak_memory_bytes(device),
        "dipbench": __version__,
        "code": code_identity(method),
    }


def _is_plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | dict)
