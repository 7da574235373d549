"""The Exam tab: a bedside exam of chest zones on the live page (issue #14).

Open (or continue) an exam for a patient pseudonym and protocol, pick a zone on the chest map
(or in the list), record the zone from the live stream with one click (auto-stop after N
seconds), and see the zone take the colour of its score and the patient LUS score ("n of N
zones") update. A zone's score can be overridden with a note (kept beside the model's). Export
writes the PDF, JSON and CSV reports.

Recording takes the frames the worker scored from this process's result stream
(:class:`ui.result_feed.ResultStore`: each frame with its live result), writes them with
:func:`stream.exam.record.record_clip` (MP4 + JSONL, atomic) at the rate they arrived, then
scores the clip through ``pleura score``'s path (:func:`stream.exam.scoring.score_into_exam`),
as the report tab does. Exams are folders under ``$PLEURA_EXAM_DIR`` (default
``./pleura-exams``), one per patient and date; the page shows the folder. One exam is open at
a time (one bedside, one patient).
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from stream.exam.protocols import PROTOCOL_SOURCES, PROTOCOLS, zones
from stream.exam.scale import SCORE_RGB, SCORE_SHORT, UNSCORED_RGB
from stream.exam.store import Exam, ExamError, check_date, check_patient
from stream.sources import DecodedFrame
from ui.result_feed import ResultStore

log = logging.getLogger(__name__)

EXAM_DIR_ENV = "PLEURA_EXAM_DIR"
ASSETS = Path(__file__).resolve().parent / "assets"
RESULT_KEYS = ("seq", "index", "pts_s", "probs", "score", "video", "findings", "latency_ms")
"""Fields of each live result kept in the clip's JSONL."""


def exam_root() -> Path:
    """Where exams are kept: ``$PLEURA_EXAM_DIR`` or ``./pleura-exams``."""
    return Path(os.environ.get(EXAM_DIR_ENV) or Path.cwd() / "pleura-exams").resolve()


def exam_js() -> str:
    return (ASSETS / "exam.js").read_text(encoding="utf-8")


def live_items(store: ResultStore, idle_s: float = 3.0) -> Iterator[tuple[DecodedFrame, dict]]:
    """Newer scored results of one stream as (frame, result) pairs, from now on.

    Ends when no new result came for ``idle_s`` (paused or stopped source).
    """
    latest = store.latest()
    after = latest.n if latest else 0
    stream_id, t0, i = None, None, 0
    while True:
        r = store.wait_newer(after, idle_s)
        if r is None:
            return
        after = r.n
        if r.meta.get("score") is None or r.meta.get("resent"):
            continue  # a status result, not a scored frame
        if stream_id is None:
            stream_id, t0 = r.stream_id, r.t_grabbed
        if r.stream_id != stream_id:
            continue
        result = {k: r.meta[k] for k in RESULT_KEYS if k in r.meta}
        yield DecodedFrame(r.frame, i, r.t_grabbed - t0), result
        i += 1


class ExamDesk:
    """The tab's server-side state: the open exam, a lock, the scorer (loaded on first use)."""

    def __init__(self, store: ResultStore | None, bundle: str | None = None,
                 backend: str = "auto", root: Path | None = None,
                 export_dir: Path | None = None) -> None:
        self.store = store
        self.bundle = bundle
        self.backend = backend
        self.root = root or exam_root()
        self.export_dir = export_dir
        self.exam: Exam | None = None
        self.lock = threading.Lock()
        self._scorer = None

    def use_bundle(self, path: Path) -> None:
        """Score later clips with the bundle at ``path`` (the page's bundle menu). No lock: a
        recording holds it for seconds; the next :meth:`scorer` call loads the new bundle."""
        self.bundle, self._scorer = str(path), None

    def scorer(self):
        if self._scorer is None:
            from engines.scorer import load_scorer

            self._scorer = load_scorer(self.bundle, backend=self.backend)
        return self._scorer

    def open(self, patient: str, protocol: int, date: str) -> Exam:
        """Open the exam of ``patient`` on ``date`` (created when new), inside the root only.

        Raises:
            ExamError: a patient ID, date or protocol that is not valid, or a folder that
                would lie outside the exam root.
        """
        patient = check_patient(str(patient or "").strip())  # before any path is built
        date = check_date(str(date or "").strip() or _dt.date.today().isoformat())
        folder = self._inside(f"{patient}-{date}")
        exam = Exam.create(folder, patient, int(protocol), date, exist_ok=True)
        if exam.protocol != int(protocol):
            raise ExamError(f"{folder} holds a {exam.protocol}-zone exam; choose protocol "
                            f"{exam.protocol} to continue it")
        self.exam = exam
        return exam

    def record(self, zone: str, seconds: float):
        from stream.exam.record import next_clip_path, record_clip
        from stream.exam.scoring import model_info, score_into_exam

        exam = self.require()
        exam._zone(zone)
        if self.store is None:
            raise ExamError("this page has no live stream to record from")
        clip = record_clip(next_clip_path(exam, zone), live_items(self.store), seconds)
        scorer = self.scorer()
        exam.set_model(model_info(scorer, self.bundle), save=False)
        entry, _ = score_into_exam(exam, zone, clip, scorer)
        return entry

    def existing(self) -> list[str]:
        """Folder names of the exams under the root, newest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if (p / "exam.json").is_file()]
        return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]

    def reopen(self, name: str) -> Exam:
        """Reopen an exam folder of the root by name (as listed by :meth:`existing`)."""
        if not name or name not in self.existing():
            raise ExamError(f"no exam {name!r} in {self.root}")
        self.exam = Exam.open(self._inside(name))
        return self.exam

    def _inside(self, name: str) -> Path:
        """``root / name`` resolved, refused unless it is a folder directly in the root (no
        absolute path, ``..``, separator or symbolic link out of it)."""
        root = Path(self.root).resolve()
        folder = (root / name).resolve()
        if folder.parent != root or "/" in name or name in ("", ".", ".."):
            raise ExamError(f"exam folder {name!r} would lie outside {root}; exams live "
                            f"directly in the exam folder")
        return folder

    def current(self) -> Exam | None:
        """The open exam as it is on disk now (another page or ``pleura exam`` may have
        changed it); the last known state when the file cannot be read."""
        if self.exam is not None:
            try:
                self.exam.refresh()
            except (ExamError, OSError) as exc:
                log.warning("exam %s: cannot re-read (%s); showing the last state",
                            self.exam.folder, exc)
        return self.exam

    def require(self) -> Exam:
        if self.exam is None:
            raise ExamError("open an exam first (patient ID and protocol)")
        return self.exam

    def export(self) -> list[str]:
        from stream.exam.report import write_reports

        exam = self.require()
        paths = write_reports(exam, exam.folder)
        if self.export_dir is None:
            return [str(p) for p in paths.values()]
        out = self.export_dir / f"exam-{exam.patient}-{exam.date}"
        out.mkdir(parents=True, exist_ok=True)  # a copy where the page may serve files from
        return [str(shutil.copy2(p, out / p.name)) for p in paths.values()]


# --------------------------------------------------------------------------- drawing


def _rgb(score: int | None) -> str:
    r, g, b = UNSCORED_RGB if score is None else SCORE_RGB[score]
    return f"rgb({r},{g},{b})"


def chest_svg(exam: Exam | None, selected: str | None) -> str:
    """Front and back torsos with a clickable disc per zone, coloured by its score."""
    TW, TH, R = 260, 260, 20
    back = exam is None or any(z.view == "back" for z, _ in exam.zone_info())
    titles = ["Front (patient's right on the left)"]
    if back:  # the 6- and 8-zone protocols have no posterior zones
        titles.append("Back (patient's right on the right)")
    W, H = 20 + len(titles) * (TW + 40), 300
    parts = [f'<svg id="pleura-exam-svg" viewBox="0 0 {W} {H}" width="100%" '
             f'xmlns="http://www.w3.org/2000/svg" style="max-width:{W + 40}px">']
    for k, title in enumerate(titles):
        x0 = 20 + k * (TW + 40)
        parts.append(f'<rect x="{x0}" y="30" width="{TW}" height="{TH}" rx="40" '
                     'fill="#f6f6f6" stroke="#888" stroke-width="2"/>')
        parts.append(f'<text x="{x0 + TW / 2}" y="20" text-anchor="middle" '
                     f'font-size="13">{html.escape(title)}</text>')
    if exam is not None:
        for z, rec in exam.zone_info():
            x0 = 20 if z.view == "front" else 20 + TW + 40
            cx, cy = x0 + z.x * TW, 30 + z.y * TH
            sel = z.id == selected
            mark = "-" if rec.score is None else f"{rec.score}{'*' if rec.override else ''}"
            parts.append(
                f'<g class="pl-zone" data-zone="{z.id}" id="pleura-zone-{z.id}" '
                f'data-score="{"" if rec.score is None else rec.score}" style="cursor:pointer">'
                f'<title>{html.escape(z.name)}</title>'
                f'<circle cx="{cx:.0f}" cy="{cy:.0f}" r="{R}" fill="{_rgb(rec.score)}" '
                f'stroke="{"#000" if sel else "#555"}" stroke-width="{5 if sel else 1.5}"/>'
                f'<text x="{cx:.0f}" y="{cy - 3:.0f}" text-anchor="middle" font-size="12" '
                f'pointer-events="none" '
                f'font-weight="bold">{z.id}</text>'
                f'<text x="{cx:.0f}" y="{cy + 12:.0f}" text-anchor="middle" pointer-events="none" '
                f'font-size="12">{mark}</text></g>')
    parts.append("</svg>")
    legend = " ".join(f'<span style="white-space:nowrap"><span style="color:{_rgb(s)}">'
                      f'&#9632;</span> {html.escape(t)}</span>'
                      for s, t in enumerate(SCORE_SHORT))
    return ("".join(parts) + f'<div style="font-size:13px">{legend} <span style="color:'
            f'{_rgb(None)}">&#9632;</span> not scored; * clinician override</div>')


def total_html(exam: Exam | None) -> str:
    if exam is None:
        return '<div id="pleura-exam-total">No exam open</div>'
    total, n, N = exam.total()
    return (f'<div>Patient LUS score ({html.escape(exam.patient)}, {html.escape(exam.date)})'
            '</div>'
            f'<div class="pl-big" id="pleura-exam-total" data-total="{total}">{total} / {3 * N}'
            f'</div><div id="pleura-exam-n" data-n="{n}" data-of="{N}">{n} of {N} zones '
            f'scored</div>')


def zone_html(exam: Exam | None, zone: str | None) -> str:
    if exam is None or zone not in (exam.zones if exam else {}):
        return '<div id="pleura-exam-zone-info">Pick a zone on the map.</div>'
    z = next(z for z in zones(exam.protocol) if z.id == zone)
    rec = exam.zones[zone]
    best = rec.best_clip()
    lines = [f"<b>{html.escape(z.id)}</b> {html.escape(z.name)}",
             f"model score: {'-' if rec.model_score is None else rec.model_score}"
             + (f" (clip {html.escape(Path(best.file).name)}, {best.n_frames} frames)"
                if best else "")]
    if rec.override:
        lines.append(f"override: {rec.override.score} ({html.escape(rec.override.note)})")
    lines.append(f"zone score: <b>{'-' if rec.score is None else rec.score}</b>; "
                 f"{len(rec.clips)} clip(s)")
    return (f'<div id="pleura-exam-zone-info" data-zone="{html.escape(zone)}">'
            + "<br>".join(lines) + "</div>")


def zone_choices(exam: Exam | None) -> list[tuple[str, str]]:
    return [] if exam is None else [(f"{z.id} {z.name}", z.id) for z in zones(exam.protocol)]


# --------------------------------------------------------------------------- the tab


def build_exam_tab(desk: ExamDesk) -> None:
    """Add the Exam tab's widgets to the current Blocks context.

    Long because Gradio wires events to the widgets of one ``Blocks`` context: the layout
    and its handlers read top to bottom as the page does.
    """
    import gradio as gr

    gr.Markdown(f"One exam per patient and date, kept in `{desk.root}` (exam.json, the zone "
                "clips as MP4 with their per-frame results, the reports). Protocols: "
                + "; ".join(f"{p} zones: {PROTOCOL_SOURCES[p]}" for p in PROTOCOLS)
                + ". Use a pseudonym, never the patient's name.")
    with gr.Row():
        patient = gr.Textbox(label="patient pseudonym / ID", elem_id="pleura-exam-patient")
        protocol = gr.Radio([str(p) for p in PROTOCOLS], value="14",
                            label="protocol (zones)", elem_id="pleura-exam-protocol")
        date = gr.Textbox(label="exam date", value=_dt.date.today().isoformat(),
                          elem_id="pleura-exam-date")
        with gr.Column():
            open_btn = gr.Button("Open / new exam", elem_id="pleura-exam-open")
            earlier = gr.Dropdown(desk.existing(), value=None, label="or continue an exam",
                                  elem_id="pleura-exam-earlier")
    status = gr.Markdown("", elem_id="pleura-exam-status")
    with gr.Row():
        with gr.Column(scale=3):
            chest = gr.HTML(chest_svg(None, None), elem_id="pleura-exam-map")
        with gr.Column(scale=2):
            total = gr.HTML(total_html(None), elem_id="pleura-exam-total-box")
            zone = gr.Radio([], label="zone (or click it on the map)",
                            elem_id="pleura-exam-zone")
            info = gr.HTML(zone_html(None, None), elem_id="pleura-exam-zone-box")
            seconds = gr.Number(6, label="record for (s), then stop", minimum=1, maximum=60,
                                elem_id="pleura-exam-seconds")
            record = gr.Button("Record zone from the live view", variant="primary",
                               elem_id="pleura-exam-record")
            with gr.Row():
                ov_score = gr.Radio(["0", "1", "2", "3"], value=None,
                                    label="clinician's score", elem_id="pleura-exam-ov")
                ov_note = gr.Textbox(label="note", elem_id="pleura-exam-note")
            with gr.Row():
                set_ov = gr.Button("Override zone", elem_id="pleura-exam-set-ov")
                clear_ov = gr.Button("Clear override", elem_id="pleura-exam-clear-ov")
            export = gr.Button("Export report (PDF, JSON, CSV)", elem_id="pleura-exam-export")
            files = gr.File(label="report", file_count="multiple", interactive=False,
                            elem_id="pleura-exam-files")

    def view(message: str | None, selected: str | None, choices: bool = False):
        """The outputs; ``message`` None leaves the status line as it is."""
        exam = desk.current()
        zone_upd = (gr.update(choices=zone_choices(exam), value=selected) if choices
                    else gr.update(value=selected))
        status_upd = gr.update() if message is None else message
        return (status_upd, chest_svg(exam, selected), total_html(exam), zone_upd,
                zone_html(exam, selected))

    outputs = [status, chest, total, zone, info]

    def guarded(fn):
        def run(*args):
            try:
                with desk.lock:
                    return fn(*args)
            except (ExamError, ValueError, OSError) as exc:
                sel = args[0] if args and isinstance(args[0], str) else None
                return view(f"**Not done:** {exc}", sel)
            except Exception as exc:  # the page shows a message, never a traceback
                log.exception("exam action failed")
                return view(f"**Failed:** {type(exc).__name__}: {str(exc)[:300]}", None)
        return run

    def on_open(p: str, proto: str, d: str):
        return opened(desk.open(p, int(proto), d))

    def on_reopen(name: str | None):
        return opened(desk.reopen(name or ""))

    def opened(exam: Exam):
        first = exam.zone_info()[0][0].id
        return view(f"Exam **{exam.patient}** {exam.date}, {exam.protocol} zones, in "
                    f"`{exam.folder}`. {exam.total_text()}.", first, choices=True)

    def on_zone(z: str | None):
        return view(None, z)

    def on_record(z: str | None, s: float):
        if not z:
            raise ExamError("pick a zone first")
        entry = desk.record(z, float(s or 6))
        state = (f"video score **{entry.video_score}** ({entry.n_frames} frames)" if entry.ok
                 else f"not scored ({entry.error})")
        return view(f"Recorded **{z}** to `{entry.file}`: {state}. "
                    f"{desk.require().total_text()}.", z)

    def on_override(z: str | None, score: str | None, note: str):
        exam = desk.require()
        if not z or score in (None, ""):
            raise ExamError("pick a zone and a score 0-3")
        exam.set_override(z, int(score), note or "")
        return view(f"Override of **{z}**: {score}. {exam.total_text()}.", z)

    def on_clear(z: str | None):
        exam = desk.require()
        exam.set_override(z or "", None)
        return view(f"Override of **{z}** cleared. {exam.total_text()}.", z)

    # api_name: the same actions for scripts (gradio_client), e.g. Client(url).predict("P07",
    # "14", "", api_name="/exam_open")
    open_btn.click(guarded(on_open), [patient, protocol, date], outputs, concurrency_limit=1,
                   api_name="exam_open")
    earlier.select(guarded(on_reopen), [earlier], outputs, concurrency_limit=1,
                   api_name="exam_reopen")
    earlier.focus(lambda: gr.update(choices=desk.existing()), [], [earlier])
    zone.change(guarded(on_zone), [zone], outputs, concurrency_limit=1, api_name="exam_zone")
    record.click(guarded(on_record), [zone, seconds], outputs, concurrency_limit=1,
                 api_name="exam_record")
    set_ov.click(guarded(on_override), [zone, ov_score, ov_note], outputs, concurrency_limit=1,
                 api_name="exam_override")
    clear_ov.click(guarded(on_clear), [zone], outputs, concurrency_limit=1,
                   api_name="exam_clear_override")

    def on_export():
        try:
            with desk.lock:
                got = desk.export()
            return f"Report written to `{desk.require().folder}`.", got
        except (ExamError, OSError) as exc:
            return f"**Not exported:** {exc}", None

    export.click(on_export, [], [status, files], concurrency_limit=1, api_name="exam_export")
