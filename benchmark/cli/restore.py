"""``dipbench restore``: a method on your own image, no ground truth (:mod:`benchmark.restore`).

Every input problem (an unreadable image or mask, a mask of another size or with no known
pixel, a method that does not solve the task, an output that would replace a file this
command did not write) is one line on stderr and exit 2, before any fit starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmark.cli.options import EXIT_FAILED, EXIT_OK, UsageError, method_option
from benchmark.cli.restore_plan import check_method, method_options
from benchmark.heap import kept_heap

TASKS = ("denoising", "inpainting", "super_resolution")


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore INPUT with one method and write OUTPUT, OUTPUT.json and the optional figures."""
    from benchmark import restore
    from benchmark.runfolder import atomic_write
    from benchmark.score_files import ImageFileError

    out = _check_output(args.input, args.out, _companions(args.out, args))
    for given, flag, task in (
        (args.mask, "--mask", "inpainting"),
        (args.factor, "--factor", "super_resolution"),
        (args.sigma, "--sigma", "denoising"),
    ):
        if given is not None and args.task != task:
            raise UsageError(f"{flag} is for --task {task}, not {args.task}")
    try:
        image = restore.read_input(args.input)
        mask = restore.read_mask(args.mask, image.pixels.shape) if args.mask else None
        observation = restore.observation_for(
            image.pixels, args.task, mask=mask, factor=args.factor, sigma=args.sigma
        )
    except (ImageFileError, ValueError) as err:
        raise UsageError(str(err)) from None
    info = check_method(args)
    options, settings = method_options(args, info, observation)
    if args.task == "denoising" and args.sigma is None and not info.fits_network:
        from benchmark.methods.classical import estimated_sigma

        print(
            f"noise level not given (--sigma): a method that uses one estimates it from the "
            f"image ({255 * estimated_sigma(observation.y):.1f} on the 0-255 scale here)"
        )
    if args.threads and info.needs_device:  # torch's threads: only a network method's
        import torch

        torch.set_num_threads(args.threads)
    try:
        with kept_heap():  # freed memory kept for the next step, as in a run's workers
            restored = _run(args, info, observation, options)
    except MemoryError as err:
        print(f"dipbench restore: not started: {err}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as err:
        raise UsageError(str(err)) from None
    device = str(restored.info.get("device", "cpu"))
    record = restore.sidecar(
        args.input, image, restored, method=args.method, task=args.task, seed=args.seed,
        settings={**settings, "sigma": args.sigma, "factor": args.factor,
                  "mask": str(args.mask) if args.mask else None},
        device=device,
    )  # fmt: skip
    with _writing(out):  # one restore at a time writes OUT and the files beside it
        _check_output(args.input, out, _companions(out, args))
        restore.write_output(out, restored.image, image.depth)
        written = [out, _sidecar_path(out), *_figures(args, out, restored)]
        record.update(_facts_of_the_run(out, written, info.needs_device))
        text = json.dumps(record, indent=2, default=str) + "\n"
        atomic_write(_sidecar_path(out), lambda p: p.write_text(text, encoding="utf-8"))
    stop = record["stopping"]
    print(
        f"{args.method} ({args.task}): kept `{restored.output}`: {restored.reason}"
        + (f"; {stop['iterations']} iterations" if stop["iterations"] else "")
        + (
            f", ES-WMV stopped at {stop['es_stop_iteration']}"
            if stop["es_stop_iteration"] and restored.output in ("es", "ema")
            else ""
        )
        + f"; {restored.seconds:.1f} s"
    )
    print("wrote " + ", ".join(str(p) for p in written))
    return EXIT_OK


def _figures(args: argparse.Namespace, out: Path, restored: Any) -> list[Path]:
    """The figures asked for (``--curve``, ``--snapshots``) that the fit has data for;
    matplotlib is loaded only for them."""
    curve, snapshots = args.curve and restored.curves, args.snapshots and restored.snapshots
    if not (curve or snapshots):
        return []
    from benchmark.report import figures

    written = [figures.restore_curve(out, restored)] if curve else []
    return written + ([figures.restore_snapshots(out, restored)] if snapshots else [])


def _sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _companions(out: Path, args: argparse.Namespace) -> list[Path]:
    """The files a restore writes beside OUT: its sidecar and the figures asked for."""
    files = [_sidecar_path(out)]
    files += [out.with_name(out.stem + ".curve.png")] if args.curve else []
    files += [out.with_name(out.stem + ".snapshots.png")] if args.snapshots else []
    return files


def _check_output(source: Path, out: Path, companions: list[Path]) -> Path:
    """Refuse an output that is the input, a file this command did not write (a file with
    no dipbench sidecar beside it), a link, or files beside it that an earlier restore did not
    write: nothing of the user's is ever replaced, nor written through."""
    from benchmark.restore import OUTPUT_SUFFIXES

    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--out {out}: write a .png or .tif(f) file")
    if out.exists() and out.resolve() == Path(source).resolve():
        raise UsageError(f"--out {out} is the input; choose another output file")
    ours = _our_sidecar(out)
    if out.exists() and ours is None:
        raise UsageError(
            f"--out {out} exists and was not written by dipbench restore; choose another "
            "output file (or move that one away)"
        )
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
    earlier = set(ours.get("files", [p.name for p in companions])) if ours else set()
    for path in [out, *companions]:
        if path.is_symlink():
            raise UsageError(f"{path} is a link: dipbench restore writes through none")
        if path != out and path.exists() and path.name not in earlier | {_sidecar_path(out).name}:
            raise UsageError(
                f"{path} exists and was not written by dipbench restore for {out.name}; move "
                "it away or choose another output file"
            )
        if path.name == _sidecar_path(out).name and path.exists() and ours is None:
            raise UsageError(
                f"{path} exists and is not a dipbench restore sidecar; move it away or choose "
                "another output file"
            )
    return out


def _our_sidecar(out: Path) -> dict[str, Any] | None:
    """The sidecar an earlier restore wrote for OUT (None: there is none of ours)."""
    try:
        content = json.loads(_sidecar_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) and "dipbench" in content else None


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Hold OUT for this restore: a second restore to the same OUT is refused while the first
    writes, so that an image and a sidecar of two runs never pair (a lock left by a restore
    that died is taken over)."""
    from benchmark.processes import process_is_running

    lock = out.with_name(f".{out.name}.restoring")
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(lock.read_text(encoding="utf-8") or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and process_is_running(holder):
                raise UsageError(
                    f"another dipbench restore (pid {holder}) is writing {out}; wait for it or "
                    "choose another output file"
                ) from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _facts_of_the_run(out: Path, written: list[Path], on_device: bool) -> dict[str, Any]:
    """What the sidecar adds once the files are written: their names, the output's hash (the
    pair's tie), the libraries' versions and, for a method that runs on a device, torch's
    threads (they change DIP's numbers; null for a method that does not use torch)."""
    import hashlib

    from benchmark.provenance import versions

    threads = None
    if on_device:
        import torch

        threads = torch.get_num_threads()
    return {
        "files": [p.name for p in written if p != out],
        "output_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "threads": threads,
        "versions": versions(),
    }


def _run(args: argparse.Namespace, info: Any, observation: Any, options: dict[str, Any]) -> Any:
    from tqdm import tqdm

    from benchmark.restore import restore_image

    show = info.fits_network and not args.quiet
    # a terminal gets a bar; a log or a pipe a whole line at least every 10 s
    if not show or sys.stderr.isatty():
        bar = tqdm(desc=args.method, unit="it", disable=not show, dynamic_ncols=True)
    else:
        from benchmark.runner.progress import LogLines  # a network fit: torch is loaded

        bar = LogLines(0, every_seconds=10.0, unit=f"{args.method}: steps")
    with bar:
        if info.fits_network:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            options = {**options, "progress": progress}
        return restore_image(
            observation, args.method, seed=args.seed, output=args.output, **options
        )


def add_parser(sub: argparse._SubParsersAction, quiet: argparse.ArgumentParser) -> None:
    """The ``restore`` sub-command."""
    from benchmark.cli.options import device, noise_level, positive_int

    p = sub.add_parser(
        "restore",
        parents=[quiet],
        help="restore your own image (no ground truth): DIP, DD or a classical method",
        description="Restore INPUT (PNG, TIFF, JPEG; gray or RGB; 8/16-bit or float TIFF) and "
        "write OUTPUT at the same depth, OUTPUT.json (input hash, method, settings, seed, "
        "stopping decision, time, peak memory, code fingerprint) and optional figures.",
    )
    p.add_argument("input", type=Path, help="the image to restore")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--out", required=True, type=Path, help="output .png or .tif(f)")
    p.add_argument(
        "--method",
        default="dip",
        help="dip (default), dd, a classical method, or your own as package.module:function",
    )
    p.add_argument(
        "--option",
        action="append",
        type=method_option,
        metavar="KEY=VALUE",
        help="an option of the method, as a suite's [methods.X.options] gives it (VALUE read "
        'as TOML: 3, 0.5, true, [1, 2], "text"; else as text); repeat for more',
    )
    p.add_argument("--preset", help="a network preset (dipbench methods lists them)")
    p.add_argument("--iterations", type=positive_int, help="network steps (default: preset's)")
    p.add_argument("--seed", type=int, default=0, help="the method's seed (default 0)")
    p.add_argument("--device", default="auto", type=device, help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    p.add_argument("--mask", type=Path, help="inpainting: the mask image, white = known")
    p.add_argument("--factor", type=positive_int, help="super-resolution: the output is N x")
    p.add_argument(
        "--sigma",
        type=noise_level,
        help="denoising: the noise level (0-255) for classical methods that need one "
        "(estimated from the image when absent)",
    )
    p.add_argument(
        "--output",
        help="the output to keep, one the method returns (DIP: last, ema, es, best_loss; "
        "default: ES-WMV or the EMA for DIP denoising, the preset's iterations for DIP "
        "inpainting and SR, the best-loss step for DD, the method's own otherwise)",
    )
    p.add_argument("--curve", action="store_true", help="also write OUTPUT.curve.png")
    p.add_argument("--snapshots", action="store_true", help="also write OUTPUT.snapshots.png")
    p.set_defaults(func=cmd_restore)
