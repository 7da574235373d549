"""Reader for ``shared/data/pocus/MANIFEST.csv``: real clips of the POCUS dataset.

The clips come from Born et al., "Accelerating detection of lung pathologies with explainable
ultrasound image analysis" (Applied Sciences 11(2):672, 2021; repository
``jannisborn/covid19_ultrasound``). ``severity`` (0-3 Soldati score) is known for 75 of them
(Gare et al. 2022) and empty elsewhere. Each clip has its own licence: ``commercial_use`` is
False for the non-commercial ones, which a shipped model must not be trained on.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from train.data.layout import DatasetError, csv_records

FINDINGS = ("effusion", "consolidations", "b_lines", "a_lines", "pleural_irregularities")
_REQUIRED = ("file", "probe", "class_label", "severity", "frames", "fps", "width", "height",
             "license", "source", "commercial_use")


@dataclass(frozen=True)
class PocusClip:
    """One row of the manifest.

    Attributes:
        path: absolute path of the clip (next to the manifest).
        severity: 0..3, or None where unknown.
        fps, frames, width, height: as decoded by the dataset's curator.
        commercial_use: False for CC BY-NC* clips.
        findings: the 1/0 finding flags (``FINDINGS``), where given.
    """

    path: Path
    filename: str
    severity: int | None
    class_label: str
    probe: str
    fps: float
    frames: int
    width: int
    height: int
    commercial_use: bool
    license: str
    source: str
    source_url: str = ""
    findings: dict[str, int] = field(default_factory=dict, hash=False, compare=False)


def _parse(row: dict[str, str], where: str, root: Path, check_files: bool) -> PocusClip:
    def num(key: str, kind: type):
        try:
            return kind(float(row[key])) if kind is int else kind(row[key])
        except ValueError:
            raise DatasetError(f"{where}: {key} {row[key]!r} is not a number") from None

    sev_text = row["severity"].strip()
    severity = None
    if sev_text:
        try:
            severity = int(float(sev_text))
        except ValueError:
            raise DatasetError(f"{where}: severity {sev_text!r} is not 0..3 or empty") from None
        if not 0 <= severity <= 3:
            raise DatasetError(f"{where}: severity {severity} is outside 0..3 (Soldati score)")
    probe = row["probe"].strip().lower()
    if probe not in ("convex", "linear"):
        raise DatasetError(f"{where}: probe {row['probe']!r} is not convex or linear")
    use = row["commercial_use"].strip().lower()
    if use not in ("yes", "no"):
        raise DatasetError(f"{where}: commercial_use {row['commercial_use']!r} is not yes/no")
    path = root / row["file"]
    if check_files and not path.is_file():
        raise DatasetError(f"{where}: clip {row['file']!r} not found in {root}")
    findings = {k: int(row[k]) for k in FINDINGS if row.get(k, "").strip() in ("0", "1")}
    return PocusClip(path=path, filename=row["file"], severity=severity,
                     class_label=row["class_label"], probe=probe, fps=num("fps", float),
                     frames=num("frames", int), width=num("width", int),
                     height=num("height", int), commercial_use=use == "yes",
                     license=row["license"], source=row["source"],
                     source_url=row.get("source_url", ""), findings=findings)


def read_pocus_manifest(path: str | Path, check_files: bool = True) -> list[PocusClip]:
    """Read and validate the manifest.

    Args:
        path: ``MANIFEST.csv`` (clips are resolved relative to its folder).
        check_files: fail if a listed clip is missing.

    Raises:
        DatasetError: malformed CSV, a missing column, a bad value or a missing clip; the
            message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: manifest not found (expected shared/data/pocus/MANIFEST.csv)")
    clips = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DatasetError(f"{path}:1: empty manifest") from None
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise DatasetError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
        for line, cells in csv_records(reader, path):
            where = f"{path}:{line}"
            if len(cells) != len(header):
                raise DatasetError(f"{where}: malformed CSV row: {len(cells)} fields, "
                                   f"header has {len(header)}")
            clips.append(_parse(dict(zip(header, cells, strict=True)), where, path.parent,
                                check_files))
    return clips
