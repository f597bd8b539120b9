"""Argument types and the option groups several commands share (each defined once)."""

from __future__ import annotations

import argparse
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: reported on stderr, exit 2."""


def positive_int(value: str) -> int:
    """An argparse type: an integer of at least 1 (a count of threads, jobs, steps)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def noise_level(value: str) -> float:
    """An argparse type: a noise level on the 0-255 scale, finite and above 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 < number <= 1e4:
        raise argparse.ArgumentTypeError(
            f"a noise level is above 0 and finite (0-255 scale, e.g. 25), got {value}"
        )
    return number


def seconds(value: str) -> float:
    """An argparse type: a finite number of seconds, at least 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or more seconds, got {value}")
    return number


def device(value: str) -> str:
    """An argparse type: a device that exists here, checked before any work starts."""
    if value in ("auto", "cpu"):
        return value  # always there: no need to import torch to know it
    from benchmark.device import resolve_device

    try:
        resolve_device(value)
    except (ValueError, RuntimeError) as err:
        raise argparse.ArgumentTypeError(
            f"{err}. Choose auto, cpu, cuda, cuda:N or mps; a CUDA GPU needs a CUDA build of "
            "torch (README, section GPU)"
        ) from None
    return value


def batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {value!r}") from None
    if size < 1:
        raise argparse.ArgumentTypeError("--batch must be at least 1")
    return size


BATCH_HELP = (
    "network cells fitted together on one device: auto (CPU: 16 when a step is at most "
    "0.5 GFLOP, else 1; CUDA: about a million pixels per batch) or a number; 1 fits each "
    "cell alone (default: auto). Batched cells equal lone fits: bit for bit on the CPU, up "
    "to float rounding on CUDA"
)


PROFILES = ["full", "quick", "ci"]
PROFILE_HELP = (
    "full: the paper's protocol; quick: a 2-core CPU in about an hour for all suites; "
    "ci: a small regression grid"
)
LONG_RUN_HOURS = 1.0  # a run estimated longer than this asks for --yes


def method_option(value: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(KEY, VALUE)``, VALUE read as a TOML value (``3``, ``0.5``,
    ``true``, ``[1, 2]``, ``"text"``), else taken as text: a suite's option, on one line."""
    import tomllib

    key, sep, text = value.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE (e.g. passes=2)")
    try:
        return key, tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        return key, text.strip()


def quiet_options() -> argparse.ArgumentParser:
    """``-q``: no progress bars."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parent


def compute_options() -> argparse.ArgumentParser:
    """Where and how cells are computed: ``run`` and ``reproduce``."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("computing")
    group.add_argument(
        "--device",
        default="auto",
        type=device,
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: auto)",
    )
    group.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="local worker processes (default: one per CPU core on the CPU, one per GPU on CUDA)",
    )
    group.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch CPU threads per cell (default: 1). Part of a CPU cell's identity: "
        "the numbers do not depend on --jobs, but do change with --threads",
    )
    group.add_argument("--batch", type=batch_size, default="auto", help=BATCH_HELP)
    group.add_argument(
        "--method-seed",
        type=int,
        default=0,
        metavar="K",
        help="draw each method's own randomness (network initialisation, input noise) from "
        "stream K; the degraded inputs stay the same. 0 (default): the suite's seeds. Used to "
        "measure a method's spread over seeds (make update-expected)",
    )
    group.add_argument(
        "--cell-timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="stop a cell that runs longer and record it as failed (0: no limit; default by "
        "profile: ci 600, quick 10800, full 86400)",
    )
    group.add_argument(
        "--reuse-stale",
        action="store_true",
        help="keep the results of cells whose code has changed since they were computed "
        "(marked stale in results.csv and the tables) instead of recomputing them",
    )
    group.add_argument(
        "--allow-suspect",
        action="store_true",
        help="exit 0 even when the full profile flags suspect cells (a network output more than "
        "1 dB under its task's trivial baseline, or last 10 dB under its oracle)",
    )
    return parent
