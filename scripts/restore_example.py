"""The README's "Restore your own image" picture: three files made from registry images (a
noisy crop, a crop with half of its pixels missing and its mask, a small crop to upscale x4),
each restored by the `dipbench restore` command the README shows, and one figure of inputs
and outputs (``docs/restore_example.png``) with the PSNR the clean crop gives them.

    python scripts/restore_example.py --out docs/restore_example.png

DIP runs fewer steps than its presets (on a CPU the presets take an hour at 128x128): each
panel's title names its steps; the numbers are PSNR against the clean crop, which `restore`
never sees.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmark import images  # noqa: E402
from benchmark.arrays import crop_to_size  # noqa: E402
from benchmark.metrics import psnr  # noqa: E402


def _save(path: Path, image: np.ndarray) -> Path:
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(path)
    return path


def _read(path: Path) -> np.ndarray:
    data = np.asarray(Image.open(path), dtype=np.float32) / 255
    return data[..., None] if data.ndim == 2 else data


def _restore(*argv: str) -> None:
    command = [sys.executable, "-m", "benchmark", "restore", *argv, "-q"]
    print("dipbench restore " + " ".join(argv[:-2]), flush=True)
    subprocess.run(command, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", default="600", help="DIP steps: denoising and x4")
    parser.add_argument("--inpainting-iterations", default="1500", help="DIP steps: inpainting")
    parser.add_argument("--out", type=Path, default=Path("docs/restore_example.png"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        steps = ["--iterations", args.iterations, "--device", "cpu"]
        photo = crop_to_size(images.load_image("kodak24", "kodim23"), 128)
        noisy = _save(tmp / "noisy.png", photo + rng.normal(0, 25 / 255, photo.shape))
        _restore(str(noisy), "--task", "denoising", *steps, "--out", str(tmp / "denoised.png"))
        house = crop_to_size(images.load_image("bm3d_gray11", "house"), 128)
        known = (rng.random(house.shape) > 0.5).astype(np.float32)
        holed, mask = _save(tmp / "photo.png", house * known), _save(tmp / "mask.png", known)
        filling = ["--iterations", args.inpainting_iterations, "--device", "cpu"]
        _restore(str(holed), "--task", "inpainting", "--mask", str(mask), *filling,
                 "--out", str(tmp / "filled.png"))  # fmt: skip
        baby = crop_to_size(images.load_image("set5_x4_gt", "baby"), 128)
        small = Image.fromarray(np.round(baby * 255).astype(np.uint8)).resize((32, 32), 1)
        small.save(tmp / "small.png")
        _restore(str(tmp / "small.png"), "--task", "super_resolution", "--factor", "4", *steps,
                 "--out", str(tmp / "large.png"))  # fmt: skip
        rows = [
            ("noisy.png (sigma 25)", noisy, f"denoised.png ({args.iterations} steps)", photo),
            (
                "photo.png, half missing",
                holed,
                f"filled.png ({args.inpainting_iterations} steps)",
                house,
            ),
            ("small.png, 32x32", tmp / "small.png", f"large.png ({args.iterations} steps)", baby),
        ]
        fig, axes = plt.subplots(3, 3, figsize=(7.5, 7.8))
        for ax_row, (title, source, result, clean) in zip(axes, rows, strict=True):
            output = tmp / result.split(" ")[0]
            shown = [(_read(source), title), (_read(output), result), (clean, "clean crop")]
            for ax, (image, name) in zip(ax_row, shown, strict=True):
                scored = image.shape == clean.shape and name != "clean crop"
                score = f"\n{psnr(clean, image):.2f} dB" if scored else ""
                gray = image.shape[2] == 1
                ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None,
                          vmin=0, vmax=1, interpolation="nearest")  # fmt: skip
                ax.set_title(name + score, fontsize=9)
                ax.axis("off")
        fig.suptitle("dipbench restore: DIP on a CPU, no clean image given", fontsize=10)
        fig.tight_layout()
        fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
