"""Your own labelled clips: a folder of clips plus a CSV of clip scores ("bring your own").

CSV columns: ``file`` (relative to the folder), ``score`` (0–3 or empty), optional ``group``
(patient or recording id: clips of one group never straddle CV folds; default: the recording
family of the file name, see :mod:`train.real.clips`), ``source`` (site or device: the unit of
leave-one-source-out, :mod:`train.real.sources`; default one source ``own``), ``probe``,
``license``, and the finding flags ``b_lines, consolidations, effusion, a_lines,
pleural_irregularities`` (1/0/empty).

Every row is checked before any work starts and every problem is reported, one line each: a
file must be a clip (video, DICOM or a folder of frames) named by a path inside the clips
folder (no absolute path, no ``..``; a symbolic link the folder holds is followed), named once;
a row has exactly the header's cells.
"""

from __future__ import annotations

import csv
from pathlib import Path

from train.data.layout import DatasetError
from train.data.pocus import FINDINGS, PocusClip

OWN_LICENCE = "own data (rights held by the training site)"


def read_label_csv(folder: str | Path, labels: str | Path, own_data: bool = False
                   ) -> list[PocusClip]:
    """Read a label CSV into clips (the same record as the POCUS manifest's).

    Raises:
        DatasetError: missing columns, a bad score, a missing clip, or no licence and no
            ``own_data`` — each naming the file and line.
    """
    folder, labels = Path(folder), Path(labels)
    if not labels.is_file():
        raise DatasetError(f"{labels}: label CSV not found")
    with labels.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DatasetError(f"{labels}: no rows (need a header file,score and one row per clip)")
    missing = [c for c in ("file", "score") if c not in rows[0]]
    if missing:
        raise DatasetError(f"{labels}:1: header lacks {', '.join(missing)} (need file,score)")
    has_licence = "license" in rows[0]
    if not has_licence and not own_data:
        raise DatasetError(f"{labels}: no license column; add one (e.g. CC BY 4.0) or pass "
                           "--own-data if your site holds the rights to these clips")
    clips, problems, seen = [], [], {}
    root = folder.resolve()
    for line, r in enumerate(rows, start=2):
        where = f"{labels}:{line}"
        if None in r:
            problems.append(f"{where}: {len(r[None])} cell(s) more than the header's "
                            f"{len(rows[0]) - 1}")
            continue
        if any(v is None for v in r.values()):
            problems.append(f"{where}: short row (missing "
                            f"{', '.join(k for k, v in r.items() if v is None)})")
            continue
        name = r["file"].strip()
        problem = _clip_problem(root, name)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        path = folder / name
        key = str(path.resolve())
        if key in seen:
            problems.append(f"{where}: clip {name!r} already given on line {seen[key]}; "
                            "one row per clip")
            continue
        seen[key] = line
        text = (r.get("score") or "").strip()
        try:
            score = int(text) if text else None
        except ValueError:
            problems.append(f"{where}: score {text!r} is not 0..3 or empty")
            continue
        if score is not None and not 0 <= score <= 3:
            problems.append(f"{where}: score {score} is outside 0..3")
            continue
        flags = {k: int(r[k]) for k in FINDINGS if (r.get(k) or "").strip() in ("0", "1")}
        licence = (r.get("license") or "").strip() if has_licence else OWN_LICENCE
        group = (r.get("group") or "").strip()
        source = (r.get("source") or "").strip() or "own"
        clips.append(PocusClip(path=path, filename=name, severity=score,
                               class_label="", probe=(r.get("probe") or "convex").lower(),
                               fps=0.0, frames=0, width=0, height=0,
                               commercial_use=licence in (OWN_LICENCE,) or
                               licence.startswith("CC BY ") and "NC" not in licence,
                               license=licence, source=source, source_url=f"group:{group}"
                               if group else "", findings=flags))
    if problems:
        raise DatasetError(f"{labels}: {len(problems)} problem(s); nothing was started:\n"
                           + "\n".join(problems))
    return clips


def _clip_problem(root: Path, name: str) -> str | None:
    """Why ``name`` is not a clip inside ``root`` (None when it is one)."""
    from stream.score_clips import VIDEO_SUFFIXES
    from stream.sources import IMAGE_SUFFIXES
    from stream.sources.dicom import DICOM_SUFFIXES

    if not name:
        return "empty file cell"
    if Path(name).is_absolute() or ".." in Path(name).parts:
        return f"file {name!r} must be a path inside the clips folder {root}, not absolute " \
               "or with '..'"
    path = root / name  # a symbolic link the folder's owner put there is theirs to follow
    if not path.exists():
        return f"clip {name!r} not found in {root}"
    if path.is_dir():
        if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in path.iterdir()):
            return f"{name!r} is a folder without PNG/JPEG frames"
        return None
    if not path.is_file():
        return f"{name!r} is not a regular file"
    if path.suffix.lower() not in VIDEO_SUFFIXES + DICOM_SUFFIXES:
        return (f"{name!r} is not a clip ({path.suffix or 'no suffix'}); give a video "
                f"({', '.join(VIDEO_SUFFIXES)}), a DICOM or a folder of frames")
    return None
