"""The head of a report's tables: what the run is (suite, profile, images, device,
versions, gaps) and the notes of the marks its tables use, only those present."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmark.runfolder import Manifest, Record

ORACLE_NOTE = (
    "† oracle: the best PSNR against the ground truth over every output the fit tracks (each "
    "step's output, the EMA at each step and the final weights' output; chosen by whole-image "
    "RGB/gray MSE, so under `sr-y` it can sit a hair under another output); it uses the clean "
    "image and is not a method's result."
)


SUSPECT_MARK = "‡"


SUSPECT_NOTE = (
    f"{SUSPECT_MARK} suspect: a network output more than 1 dB under its task's trivial baseline "
    "(full profile), or `last` more than 10 dB under the same fit's oracle; the reasons are "
    "listed under the table. Such a number is a bug until explained."
)


NOT_DETECTED_MARK = "§"


NOT_DETECTED_NOTE = (
    f"{NOT_DETECTED_MARK} ES-WMV did not detect a stop (its patience never ran out): the value "
    "is the minimum-variance output so far, not a detection; see `es_wmv.md`."
)


WINDOW_NOTE = (
    "W = 100 outputs, patience P = 1000 iterations unless the suite sets others or a fit "
    "shorter than its preset scales them (the table notes say so)"
)


STALE_MARK = "¶"


STALE_NOTE = (
    f"{STALE_MARK} stale: computed by code that has changed since (kept with --reuse-stale, or "
    "left by a run that did not finish); run the suite again to recompute it."
)


TRIVIAL_LABELS = {
    "observation": "the degraded input",
    "bicubic": "bicubic upsampling of the LR input",
    "telea": "Telea inpainting of the masked input",
}


def coverage(meta: Manifest) -> str:
    """How much of the suite's image grid the run holds, per set ("set5_x4_gt 4 of 5"), or
    empty where it holds all of it (or its manifest predates the count)."""
    if not meta.grid_images or set(meta.grid_images) <= set(meta.images):
        return ""
    held = set(meta.images)
    sets = dict.fromkeys(entry.split("/", 1)[0] for entry in meta.grid_images)
    parts = []
    for name in sets:
        members = [e for e in meta.grid_images if e.split("/", 1)[0] == name]
        parts.append(f"{name} {sum(e in held for e in members)} of {len(members)}")
    return "of the suite's grid at this profile: " + ", ".join(parts)


def header(meta: Manifest, records: list[Record], missing_cells: int = 0) -> list[str]:
    """What the run is (suite, profile, images, devices, versions), its gaps (failed cells,
    ``missing_cells`` not run, stale ones) and the notes of the marks its tables use."""
    ok = [r for r in records if r.ok]
    versions = ok[0].versions if ok else {}
    devices = sorted({r.device for r in records})
    revisions = sorted({r.git_revision for r in records})
    profile = meta.profile
    if profile == "full":
        caveat = "the suite's full settings (the paper's protocol where it follows a paper)"
    elif not meta.profile_defined:
        caveat = f"the suite defines no {profile} profile: these are its full settings"
    else:
        caveat = (
            f"**{profile} profile: NOT the paper's protocol** (smaller crops, fewer iterations "
            "or narrower networks; the published numbers are shown for orientation only)"
        )
    names = {entry.split("/", 1)[-1] for entry in meta.images}
    counted = f"{len(names)}" + (
        f" ({len(meta.images)} set/image pairs)" if len(names) != len(meta.images) else ""
    )
    lines = [
        f"# {meta.title}",
        "",
        f"- suite `{meta.suite}`, profile `{profile}`: {caveat}",
        f"- protocol `{meta.protocol}`; images: {counted}"
        + (f", center crops of {meta.crop} px" if meta.crop else ", whole images")
        + (f" ({coverage(meta)})" if coverage(meta) else ""),
        f"- device(s): {', '.join(devices)}; git revision(s): {', '.join(revisions)}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]
    if meta.notes:
        lines.append(f"- notes: {meta.notes}")
    failed = [r for r in records if not r.ok]
    if failed or missing_cells:
        lines.append(
            f"- **gaps:** {len(failed)} failed cell(s), {missing_cells} "
            "cell(s) not run; their entries read `failed` or are empty, and a mean over "
            "fewer images says `(n=...)`"
        )
    stale = [r for r in ok if r.stale]
    if stale:
        lines.append(
            f"- **stale:** {len(stale)} cell(s) computed by code that has changed since "
            f"(marked {STALE_MARK})"
        )
    return lines + ["", *_notes(meta, records, stale), ""]


def _notes(meta: Manifest, records: list[Record], stale: list[Record]) -> list[str]:
    """The notes of the marks the tables use (a note for a mark that is absent is noise)."""
    rows = [row for r in records for row in r.rows]
    notes = []
    if any(r.trivial for r in records):
        name = str(meta.trivial or "")
        what = TRIVIAL_LABELS.get(name, name or "the task's trivial answer")
        networks = any(r.info.get("iterations") for r in records)
        notes.append(
            f"The trivial baseline row is {what}, scored in this run per image"
            + (
                ": a network output more than 1 dB under it is suspect at the full profile."
                if networks
                else "."
            )
        )
    if any(row["output"] == "oracle" for row in rows):
        notes.append(ORACLE_NOTE)
    if any(r.suspect for r in records):
        notes.append(SUSPECT_NOTE)
    if any(r.info.get("es_stop_iteration", 0) is None for r in records):
        notes.append(NOT_DETECTED_NOTE)
    if stale:
        notes.append(STALE_NOTE)
    scaled = _scaled_schedules(meta, records)
    if scaled:
        notes.append(
            "Fits shorter than their preset (iterations x learning rate) scale every setting "
            "counted in iterations by the same ratio (a schedule meant for the paper's length "
            f"is another method in a short fit): {scaled}."
        )
    return [line for note in notes for line in (note, "")][:-1]


SCHEDULE_NAMES = {
    "reg_noise_decay_every": "input-noise decay every",
    "check_every": "backtracking check every",
    "es_window": "ES-WMV window",
    "es_patience": "ES-WMV patience",
}


def _scaled_schedules(meta: Manifest, records: list[Record]) -> str:
    """``DIP: ES-WMV window 100 -> 33, ...; Deep Decoder: ...`` from the records' infos."""
    labels = {m["key"]: m["label"] for m in meta.methods}
    found: dict[str, str] = {}
    for record in records:
        scaled = record.info.get("schedule_scaled")
        key = record.cell["method_key"]
        if scaled and key not in found:
            found[key] = ", ".join(
                f"{SCHEDULE_NAMES.get(name, name)} {old} -> {new}"
                for name, (old, new) in scaled.items()
            )
    return "; ".join(f"{labels.get(key, key)}: {text}" for key, text in found.items())
