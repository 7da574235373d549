"""An exam's report as JSON and CSV (the PDF is :mod:`stream.exam.pdf`).

``<patient>-report.json``: the exam record (``exam.json``'s content) plus, per zone, its name
and chest position, the protocol's source and the research-use notice.
``<patient>-report.csv``: one row per zone (:data:`CSV_FIELDS`) and a last ``TOTAL`` row whose
``score`` is the patient LUS score and ``n_scored`` / ``n_zones`` say how complete it is.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from stream.csvsafe import SafeDictWriter
from stream.exam.protocols import PROTOCOL_SOURCES
from stream.exam.scale import NOTICE
from stream.exam.scoring import findings_text
from stream.exam.store import Exam, write_json_atomic

CSV_FIELDS = ("patient", "date", "protocol", "zone", "zone_name", "model_score",
              "override_score", "override_note", "score", "n_clips", "clips", "p0", "p1", "p2",
              "p3", "findings", "n_scored", "n_zones")


def report_doc(exam: Exam) -> dict[str, Any]:
    doc = exam.to_dict()
    doc["protocol_source"] = PROTOCOL_SOURCES[exam.protocol]
    doc["notice"] = NOTICE
    for z, _ in exam.zone_info():
        doc["zones"][z.id].update(name=z.name, view=z.view, x=z.x, y=z.y)
    return doc


def csv_rows(exam: Exam) -> list[dict[str, Any]]:
    rows = []
    base = {"patient": exam.patient, "date": exam.date, "protocol": exam.protocol}
    for z, rec in exam.zone_info():
        best = rec.best_clip()
        probs = best.probs if best and best.probs else [""] * 4
        rows.append({**base, "zone": z.id, "zone_name": z.name,
                     "model_score": "" if rec.model_score is None else rec.model_score,
                     "override_score": rec.override.score if rec.override else "",
                     "override_note": rec.override.note if rec.override else "",
                     "score": "" if rec.score is None else rec.score,
                     "n_clips": len(rec.clips), "clips": ";".join(c.file for c in rec.clips),
                     **{f"p{k}": probs[k] for k in range(4)},
                     "findings": findings_text(best.findings) if best else "",
                     "n_scored": "", "n_zones": ""})
    total, n, N = exam.total()
    rows.append({**{k: "" for k in CSV_FIELDS}, **base, "zone": "TOTAL",
                 "zone_name": f"patient LUS score ({n} of {N} zones)", "score": total,
                 "n_scored": n, "n_zones": N})
    return rows


def csv_text(exam: Exam) -> str:
    buf = io.StringIO()
    w = SafeDictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    w.writerows(csv_rows(exam))
    return buf.getvalue()


def write_reports(exam: Exam, out: str | Path, pdf: bool = True) -> dict[str, Path]:
    """Write ``<patient>-report.{json,csv,pdf}`` into ``out`` (each atomically).

    Returns:
        {"json": path, "csv": path, "pdf": path (when written)}
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{exam.patient}-report"
    paths = {"json": write_json_atomic(stem.with_suffix(".json"), report_doc(exam))}
    csv_path = stem.with_suffix(".csv")
    tmp = csv_path.with_name(f".{csv_path.name}.tmp")
    tmp.write_text(csv_text(exam), encoding="utf-8")
    tmp.replace(csv_path)
    paths["csv"] = csv_path
    if pdf:
        from stream.exam.pdf import write_pdf

        paths["pdf"] = write_pdf(exam, stem.with_suffix(".pdf"))
    return paths
