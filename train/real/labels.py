"""Your own labelled clips: a folder of clips plus a CSV of clip scores ("bring your own").

CSV columns: ``file`` (relative to the folder), ``score`` (0–3 or empty), optional ``group``
(patient or recording id: clips of one group never straddle CV folds; default: the recording
family of the file name, see :mod:`train.real.clips`), ``probe``, ``license``, and the finding
flags ``b_lines, consolidations, effusion, a_lines, pleural_irregularities`` (1/0/empty).
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
    clips = []
    for line, r in enumerate(rows, start=2):
        where = f"{labels}:{line}"
        path = folder / r["file"]
        if not path.exists():
            raise DatasetError(f"{where}: clip {r['file']!r} not found in {folder}")
        text = (r.get("score") or "").strip()
        try:
            score = int(text) if text else None
        except ValueError:
            raise DatasetError(f"{where}: score {text!r} is not 0..3 or empty") from None
        if score is not None and not 0 <= score <= 3:
            raise DatasetError(f"{where}: score {score} is outside 0..3")
        flags = {k: int(r[k]) for k in FINDINGS if (r.get(k) or "").strip() in ("0", "1")}
        licence = (r.get("license") or "").strip() if has_licence else OWN_LICENCE
        group = (r.get("group") or "").strip()
        clips.append(PocusClip(path=path, filename=r["file"], severity=score,
                               class_label="", probe=(r.get("probe") or "convex").lower(),
                               fps=0.0, frames=0, width=0, height=0,
                               commercial_use=licence in (OWN_LICENCE,) or
                               licence.startswith("CC BY ") and "NC" not in licence,
                               license=licence, source="own", source_url=f"group:{group}"
                               if group else "", findings=flags))
    return clips
