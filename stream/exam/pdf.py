"""An exam's PDF report (fpdf2, pure Python): chest map, zone table, total, key frames.

Page 1: patient, date, protocol and its source; the patient LUS score with "n of N zones";
the chest map (front and back, each zone a disc coloured by its score and labelled with it);
the score legend in clinical words; the zone table (model score, clinician override and note,
zone score, clips). Then one key frame per scored zone: the frame of the zone's best clip with
the highest probability of the clip's video score, with the two crop boxes drawn (crop 1 red,
crop 2 green, as on the live page). Every page ends with the model, its version and the
research-use notice.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream.exam.protocols import PROTOCOL_SOURCES
from stream.exam.scale import NOTICE, SCORE_RGB, SCORE_SHORT, UNSCORED_RGB
from stream.exam.scoring import findings_text
from stream.exam.store import Exam, now_iso
from stream.sources import decode_file

log = logging.getLogger(__name__)

CROP_RGB = ((255, 0, 0), (0, 255, 0))


def _t(text: Any) -> str:
    """Text the PDF core fonts can show (latin-1); other characters become '?'."""
    return str(text).replace("\u2013", "-").replace("\u2014", "-").encode(
        "latin-1", "replace").decode("latin-1")


def key_frame_png(exam: Exam, zone: str, max_side: int = 360) -> bytes | None:
    """PNG of the zone's key frame with its crop boxes, or None when there is none."""
    best = exam.zones[zone].best_clip()
    if best is None or best.key_frame is None:
        return None
    try:
        frame = None
        for f in decode_file(exam.resolve(best.file), max_frames=best.key_frame + 1):
            frame = f
        if frame is None:
            return None
        rgb = np.ascontiguousarray(frame.image if frame.image.ndim == 3 else
                                   cv2.cvtColor(frame.image, cv2.COLOR_GRAY2RGB))
    except Exception as exc:  # a clip moved or unreadable: the report still gets written
        log.warning("key frame of %s (%s) not drawn: %s", zone, best.file, exc)
        return None
    for boxes, colour in zip(best.key_boxes or [], CROP_RGB, strict=False):
        pts = np.round(np.asarray(boxes, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(rgb, [pts], True, colour, max(1, rgb.shape[0] // 150))
    scale = max_side / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return png.tobytes() if ok else None


def _colour(score: int | None) -> tuple[int, int, int]:
    return UNSCORED_RGB if score is None else SCORE_RGB[score]


def _make_pdf(exam: Exam):
    from fpdf import FPDF

    model = exam.model or {}
    footer_text = _t(f"Model: {model.get('version') or model.get('name', 'unknown')} "
                     f"({model.get('backend', '?')}), pleura {model.get('pleura', '?')}. "
                     f"{NOTICE}")

    class Report(FPDF):
        def footer(self) -> None:
            self.set_y(-18)
            self.set_font("Helvetica", "", 7)
            self.set_text_color(90, 90, 90)
            self.multi_cell(0, 3.5, footer_text + f"  Page {self.page_no()}", align="C")

    pdf = Report(format="A4")
    pdf.set_auto_page_break(True, margin=22)
    pdf.set_title(_t(f"LUS exam {exam.patient} {exam.date}"))
    pdf.set_creator("pleura")
    return pdf


def _chest_map(pdf, exam: Exam, x0: float, y0: float, w: float, h: float) -> None:
    """Front and back torso outlines with a coloured, labelled disc per zone."""
    gap = 10.0
    tw = (w - gap) / 2
    views = [("front", "Front (patient's right on the left)")]
    if any(z.view == "back" for z, _ in exam.zone_info()):  # none in the 6- and 8-zone ones
        views.append(("back", "Back (patient's right on the right)"))
    for k, (view, title) in enumerate(views):
        tx = x0 + k * (tw + gap)
        pdf.set_draw_color(120, 120, 120)
        pdf.set_line_width(0.4)
        pdf.rect(tx + 0.08 * tw, y0 + 6, 0.84 * tw, h - 6, round_corners=True,
                 corner_radius=8)
        pdf.set_font("Helvetica", "", 8)
        pdf.set_xy(tx, y0)
        pdf.cell(tw, 5, _t(title), align="C")
        for z, rec in exam.zone_info():
            if z.view != view:
                continue
            cx = tx + 0.08 * tw + z.x * 0.84 * tw
            cy = y0 + 6 + z.y * (h - 6)
            r = 6.0
            pdf.set_fill_color(*_colour(rec.score))
            pdf.set_draw_color(40, 40, 40)
            pdf.ellipse(cx - r, cy - r, 2 * r, 2 * r, style="DF")
            pdf.set_font("Helvetica", "B", 7)
            pdf.set_xy(cx - r, cy - 4.5)
            pdf.cell(2 * r, 4, z.id, align="C")
            pdf.set_xy(cx - r, cy - 0.5)
            mark = "-" if rec.score is None else str(rec.score) + ("*" if rec.override else "")
            pdf.cell(2 * r, 4, mark, align="C")


def _legend(pdf) -> None:
    pdf.set_font("Helvetica", "", 8)
    for s, text in enumerate(SCORE_SHORT):
        pdf.set_fill_color(*SCORE_RGB[s])
        pdf.cell(4, 4, "", fill=True)
        pdf.cell(86, 4, _t(" " + text))
        if s % 2:
            pdf.ln(5)
    pdf.set_fill_color(*UNSCORED_RGB)
    pdf.cell(4, 4, "", fill=True)
    pdf.cell(0, 4, " - not scored      * clinician override", new_x="LMARGIN", new_y="NEXT")


def _table(pdf, exam: Exam) -> None:
    cols = (("Zone", 12), ("Name", 42), ("Model", 14), ("Override", 16), ("Note", 50),
            ("Score", 13), ("Clips", 43))
    pdf.set_font("Helvetica", "B", 8)
    pdf.set_fill_color(230, 230, 230)
    for name, w in cols:
        pdf.cell(w, 5, name, border=1, fill=True)
    pdf.ln()
    pdf.set_font("Helvetica", "", 8)
    for z, rec in exam.zone_info():
        clips = ", ".join(Path(c.file).name for c in rec.clips) or "-"
        values = (z.id, z.name, "-" if rec.model_score is None else rec.model_score,
                  rec.override.score if rec.override else "",
                  rec.override.note if rec.override else "",
                  "-" if rec.score is None else rec.score, clips)
        for (name, w), v in zip(cols, values, strict=True):
            text = _t(v)
            while len(text) > 3 and pdf.get_string_width(text) > w - 1.5:
                text = text[:-4] + "..."
            fill = name == "Score" and rec.score is not None
            if fill:
                pdf.set_fill_color(*_colour(rec.score))
            pdf.cell(w, 5, text, border=1, fill=fill)
        pdf.ln()
    total, n, N = exam.total()
    pdf.set_font("Helvetica", "B", 9)
    pdf.cell(sum(w for _, w in cols[:5]), 6, _t(f"Patient LUS score ({n} of {N} zones)"),
             border=1)
    pdf.cell(cols[5][1], 6, str(total), border=1)
    pdf.cell(cols[6][1], 6, f"max {3 * N}", border=1, new_x="LMARGIN", new_y="NEXT")


def _key_frames(pdf, exam: Exam) -> None:
    items = [(z, rec) for z, rec in exam.zone_info() if rec.best_clip() is not None]
    if not items:
        return
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 7, "Key frames (crop 1 red, crop 2 green)", new_x="LMARGIN", new_y="NEXT")
    w, col, x_left = 58.0, 0, pdf.l_margin
    for z, rec in items:
        png = key_frame_png(exam, z.id)
        best = rec.best_clip()
        if col == 0 and pdf.get_y() + w + 16 > pdf.h - pdf.b_margin:
            pdf.add_page()
        y = pdf.get_y()
        x = x_left + col * (w + 4)
        if png is not None:
            pdf.image(io.BytesIO(png), x=x, y=y, w=w, h=w, keep_aspect_ratio=True)
        else:
            pdf.rect(x, y, w, w)
        pdf.set_xy(x, y + w + 0.5)
        pdf.set_font("Helvetica", "B", 8)
        score = f"score {rec.score}" + (" (override)" if rec.override else "")
        pdf.multi_cell(w, 3.5, _t(f"{z.id} {z.name}: {score}"))
        pdf.set_x(x)
        pdf.set_font("Helvetica", "", 7)
        pdf.multi_cell(w, 3.2, _t(f"{Path(best.file).name}, frame {best.key_frame}, video "
                                  f"score {best.video_score}. {findings_text(best.findings)}"))
        col = (col + 1) % 3
        pdf.set_xy(x_left, y if col else y + w + 16)


def build_pdf(exam: Exam) -> bytes:
    """The report as PDF bytes."""
    pdf = _make_pdf(exam)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 9, _t(f"Lung ultrasound exam - patient {exam.patient}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.multi_cell(0, 4.5, _t(f"Exam date {exam.date}; {exam.protocol}-zone protocol "
                              f"({PROTOCOL_SOURCES[exam.protocol]}); report made {now_iso()}"),
                   new_x="LMARGIN", new_y="NEXT")
    total, n, N = exam.total()
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 8, _t(f"Patient LUS score: {total} / {3 * N}  ({n} of {N} zones scored)"),
             new_x="LMARGIN", new_y="NEXT")
    if n < N:
        pdf.set_font("Helvetica", "", 9)
        pdf.cell(0, 5, _t(f"Incomplete exam: {N - n} zones have no score; the total covers "
                          "the scored zones only."), new_x="LMARGIN", new_y="NEXT")
    y = pdf.get_y() + 2
    _chest_map(pdf, exam, pdf.l_margin, y, pdf.epw, 78)
    pdf.set_xy(pdf.l_margin, y + 82)
    _legend(pdf)
    pdf.ln(2)
    _table(pdf, exam)
    _key_frames(pdf, exam)
    return bytes(pdf.output())


def write_pdf(exam: Exam, path: str | Path) -> Path:
    """Write the PDF atomically to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(build_pdf(exam))
    tmp.replace(path)
    return path
