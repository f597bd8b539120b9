"""The grid of a suite: its cells, each one (image, degradation, level, method, repetition).

A cell's seeds depend only on what it is, never on the order of execution: the degradation
seed hashes (base seed, dataset, image, degradation, level, repetition), so every method sees
the very same degraded input, and the method seed hashes the degradation seed with the
method's name. A cell's key hashes everything that determines its result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmark import __version__


@dataclass(frozen=True)
class MethodSpec:
    """One method entry of a suite, after profile overrides."""

    key: str  # the name in the suite and in the tables
    method: str  # registry name or package.module:function
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()  # () = every output the method produces
    presets: dict[str, str] = field(default_factory=dict)  # degradation kind -> preset
    degradations: tuple[str, ...] = ()  # the kinds it runs on; () = every kind of the suite

    def runs_on(self, degradation: str) -> bool:
        """Whether this method has a cell for degradation kind ``degradation``."""
        return not self.degradations or degradation in self.degradations

    def options_for(self, degradation: str) -> dict[str, Any]:
        """The call options for one degradation kind (a preset may depend on it)."""
        if degradation in self.presets:
            return {**self.options, "preset": self.presets[degradation]}
        return dict(self.options)


@dataclass(frozen=True)
class Cell:
    """One unit of work: everything that determines its result."""

    suite: str
    profile: str
    dataset: str
    image: str
    crop: int
    task: str
    protocol: str
    degradation: str
    level: float
    severity: int | None
    degradation_options: dict[str, Any]
    repetition: int
    method_key: str
    method: str
    method_options: dict[str, Any]
    outputs: tuple[str, ...]
    degradation_seed: int
    method_seed: int
    registry: str = ""  # the suite's own registry file ("": the packaged images only)

    def key(self, compute_kind: str) -> str:
        """A hash of everything that determines the result, the package version included;
        ``compute_kind`` is what else does (``runner.records.compute_kind``: ``"cpu"``,
        ``"cpu-2threads"``, ``"cuda"``)."""
        content = asdict(self)
        content.pop("suite")  # the same cell in two suites computes the same thing
        content.pop("profile")
        content.pop("registry")  # where the image is listed: its pixels are the inputs' part
        # The stored name stays "device_type": renaming it would change every cell's key.
        content.update(version=__version__, device_type=compute_kind)
        return _digest(content)[:20]

    @property
    def observation_key(self) -> str:
        """A hash of what determines the cell's observation and target (shared by every
        method run on them)."""
        content = [
            self.dataset,
            self.image,
            self.crop,
            self.degradation,
            self.level,
            self.degradation_options,
            self.degradation_seed,
            __version__,
        ]
        return _digest(content)[:20]

    @property
    def label(self) -> str:
        return (
            f"{self.image} {self.degradation}={self.level:g} {self.method_key} r{self.repetition}"
        )


def _digest(content: Any) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def seed_of(*parts: Any) -> int:
    """A 63-bit seed from any JSON-serialisable parts, independent of execution order."""
    return int(_digest(list(parts))[:16], 16) >> 1


@dataclass(frozen=True)
class Suite:
    """A suite resolved for one profile."""

    name: str
    profile: str
    title: str
    task: str
    protocol: str
    datasets: tuple[str, ...]
    images: tuple[tuple[str, str], ...]  # (dataset, image)
    crop: int
    seed: int
    repetitions: int
    degradations: tuple[dict[str, Any], ...]
    methods: tuple[MethodSpec, ...]
    paper: dict[str, Any]
    notes: str
    source: Path
    report: dict[str, Any] = field(default_factory=dict)
    method_seed: int = 0  # 0: the suite's method seeds; K > 0: stream K (same degraded inputs)
    profile_defined: bool = True  # False: the suite has no [profiles.<profile>] (full settings)
    registry: Path | None = None  # the suite's own registry file (benchmark.datasets)
    # its whole grid before --images, --methods and --levels chose some
    grid_images: tuple[tuple[str, str], ...] = ()
    grid_methods: tuple[str, ...] = ()  # method keys
    grid_degradations: tuple[str, ...] = ()  # degradation kinds

    def cells(self) -> list[Cell]:
        """The grid, image-major (so a suite's first results cover whole images)."""
        cells = []
        for dataset, image in self.images:
            for deg in self.degradations:
                if deg.get("datasets") and dataset not in deg["datasets"]:
                    continue
                for level, severity in levels_of(deg):
                    for rep in range(self.repetitions):
                        d_seed = seed_of(self.seed, dataset, image, deg["kind"], level, rep)
                        for spec in self.methods:
                            if not spec.runs_on(deg["kind"]):
                                continue
                            cells.append(
                                Cell(
                                    suite=self.name,
                                    profile=self.profile,
                                    dataset=dataset,
                                    image=image,
                                    crop=self.crop,
                                    task=self.task,
                                    protocol=self.protocol,
                                    degradation=deg["kind"],
                                    level=level,
                                    severity=severity,
                                    degradation_options=deg.get("options", {}),
                                    repetition=rep,
                                    method_key=spec.key,
                                    method=spec.method,
                                    method_options=spec.options_for(deg["kind"]),
                                    outputs=spec.outputs,
                                    degradation_seed=d_seed,
                                    method_seed=self._method_seed(d_seed, spec.key),
                                    registry=str(self.registry or ""),
                                )
                            )
        return cells

    def cell_count(self) -> int:
        """How many cells :meth:`cells` makes, counted without making them (a grid of a
        million cells is refused before it is planned)."""
        count = 0
        for dataset, _ in self.images:
            for deg in self.degradations:
                if deg.get("datasets") and dataset not in deg["datasets"]:
                    continue
                levels = len(deg["imagenet_c"] if "imagenet_c" in deg else deg["levels"])
                methods = sum(spec.runs_on(deg["kind"]) for spec in self.methods)
                count += levels * self.repetitions * methods
        return count

    def _method_seed(self, degradation_seed: int, key: str) -> int:
        """The seed of a method's own randomness (network initialisation, input noise)."""
        if self.method_seed == 0:
            return seed_of(degradation_seed, key)
        return seed_of(degradation_seed, key, "stream", self.method_seed)


def levels_of(deg: Mapping[str, Any]) -> list[tuple[float, int | None]]:
    """A degradation entry's (level, ImageNet-C severity or None) pairs."""
    if "imagenet_c" in deg:
        # Here, not at the top: a cell's identity (what the report reads) needs no torch.
        from benchmark.degradations import imagenet_c_level

        return [(float(imagenet_c_level(deg["kind"], s)), int(s)) for s in deg["imagenet_c"]]
    return [(float(level), None) for level in deg["levels"]]
