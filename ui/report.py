"""The offline report tab: score a whole clip, show its timeline, video score and a strip of
frames with overlays, and offer the results as JSON and CSV. A bundle with a findings head adds
the clip's findings (B-lines, consolidation, ...) as a table, the frames' in the strip captions
and both in the files.

Scoring is :func:`ui.scoring.score_rows`: ``pleura score``'s clip loop on the one scoring core
(:mod:`engines.scorer`), so the report, the command line and the live worker give the same
numbers; this module only validates the upload, draws and writes files.
"""

from __future__ import annotations

import html
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.findings import finding_label
from stream.csvsafe import SafeWriter
from ui import overlay, timeline
from ui.result_feed import expected_score
from ui.safety import SafetyError, UploadLimits, check_upload
from ui.scoring import FrameRow

if TYPE_CHECKING:
    from ui.app import PageConfig

log = logging.getLogger(__name__)

STRIP_FRAMES = 8
STRIP_COLUMNS = 4
"""Thumbnails per row: wide enough for a readable caption under each."""


@dataclass(frozen=True)
class ClipReport:
    """A scored clip: per-frame rows, the video prediction and how it was made.

    ``findings`` is the clip summary of the findings ({name: {"mean", "max", "fraction",
    "present"}}, as ``pleura score``'s ``video.findings``), None without a findings head.
    ``crops`` says whether the crop boxes are drawn (:func:`stream.result_fields.crops_meta`);
    ``evidence`` is each score's share of the clip's evidence, the bars of the summary
    (``video_probs``, the softmax of the aggregate, is ~0.25 each on long clips).
    """

    clip: str
    rows: tuple[FrameRow, ...]
    video_probs: tuple[float, ...]
    backend: str
    bundle: str
    seconds: float
    findings: dict[str, dict[str, Any]] | None = None
    crops: dict[str, Any] | None = None
    evidence: tuple[float, ...] | None = None
    real_scans: tuple[bool | None, str] = (None, "")

    @property
    def video_score(self) -> int:
        # The running score is computed in the log domain by the scorer: long clips make
        # every aggregate underflow to 0, so the argmax of video_probs would be meaningless.
        return self.rows[-1].video_score

    @property
    def finding_names(self) -> list[str]:
        """The findings' names in the model's order ([] without a findings head)."""
        return list(self.findings or (self.rows[0].findings if self.rows else None) or {})

    def to_json(self) -> dict[str, Any]:
        """The report file: video prediction, per-frame rows; findings only when present."""
        video: dict[str, Any] = {"score": self.video_score, "probs": list(self.video_probs)}
        if self.evidence is not None:
            video["evidence"] = list(self.evidence)
        if self.findings is not None:
            video["findings"] = self.findings
        return {
            "clip": self.clip, "bundle": self.bundle, "backend": self.backend,
            "n_frames": len(self.rows), "seconds": round(self.seconds, 3), "video": video,
            "frames": [{"frame": r.index, "score": r.score, "probs": list(r.probs),
                        "video_score": r.video_score, "video_probs": list(r.video_probs),
                        "boxes": r.boxes, **({"findings": r.findings} if r.findings else {})}
                       for r in self.rows],
        }


def write_frames_csv(report: ClipReport, path: Path) -> Path:
    """One line per frame: frame, score, p0..p3, video_score, video_p0..video_p3, then the
    frame's probability of each finding (one column per finding name) when the bundle has them.
    """
    names = report.finding_names
    with open(path, "w", newline="") as f:
        w = SafeWriter(f)
        w.writerow(["frame", "score", "p0", "p1", "p2", "p3", "video_score",
                    "video_p0", "video_p1", "video_p2", "video_p3", *names])
        for r in report.rows:
            found = r.findings or {}
            w.writerow([r.index, r.score, *(f"{p:.6f}" for p in r.probs), r.video_score,
                        *(f"{p:.6f}" for p in r.video_probs),
                        *(f"{found[n]:.6f}" if n in found else "" for n in names)])
    return path


def timeline_image(report: ClipReport, width: int = 900, height: int = 200) -> np.ndarray:
    """(height, width, 3) RGB timeline: frame scores, running video score, expected score;
    over seconds of the clip when every frame has a timestamp, else over frames."""
    times = [r.t_s for r in report.rows]
    return timeline.render_timeline([r.score for r in report.rows],
                                    [float(r.video_score) for r in report.rows],
                                    width=width, height=height,
                                    expected=[expected_score(r.probs) for r in report.rows],
                                    times=None if None in times else times)


def strip_indices(n: int, k: int = STRIP_FRAMES) -> list[int]:
    """``k`` evenly spaced indices into ``n`` rows (all of them when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def strip_images(report: ClipReport, frames: dict[int, np.ndarray],
                 ) -> list[tuple[np.ndarray, str]]:
    """Frames with overlays for a gallery: [(RGB image, caption)], one per frame in ``frames``
    (the strip's, chosen by :func:`ui.scoring.score_rows`), in clip order.

    The crop boxes follow ``report.crops`` (none for a whole-frame model or crops that do not
    localise). Captions are short, so they stay readable under a thumbnail:
    ``"1.2 s: score 2, video 3"`` (the frame's own score, then the running video score).
    """
    out = []
    boxes = (report.crops or {}).get("show", True)
    by_index = {r.index: r for r in report.rows}
    for index, img in sorted(frames.items()):
        r = by_index.get(index)
        if r is None:
            continue
        res = {"boxes": r.boxes, "score": r.score, "probs": list(r.probs),
               "video": {"score": r.video_score, "probs": list(r.video_probs)},
               "findings": r.findings}
        rgb = overlay.render_result(img, res, show_text=False, show_boxes=boxes)
        out.append((rgb, strip_caption(r, overlay.findings_caption(overlay.finding_rows(res)))))
    return out


def strip_caption(r: FrameRow, found: str = "") -> str:
    """``"1.2 s: score 2, video 3"`` (``"frame 24: ..."`` without a timestamp), then the
    frame's findings when the bundle has a findings head."""
    when = f"{r.t_s:.1f} s" if r.t_s is not None else f"frame {r.index}"
    caption = f"{when}: score {r.score}, video {r.video_score}"
    return f"{caption}; {found}" if found else caption


def _finding_row_html(name: str, s: dict[str, Any]) -> str:
    """One table row: clinical words (bold when present), mean as a bar, max, share >= 50%."""
    label = html.escape(finding_label(name))
    mean = float(s["mean"])
    bar = (f"<span style='display:inline-block;width:80px;height:9px;background:#eee;"
           f"vertical-align:middle'><span style='display:block;height:100%;"
           f"width:{100 * mean:.0f}%;background:#555'></span></span>")
    return (f"<tr><td>{f'<b>{label}</b>' if s['present'] else label}</td>"
            f"<td>{bar} {100 * mean:.0f}%</td><td>{100 * float(s['max']):.0f}%</td>"
            f"<td>{100 * float(s['fraction']):.0f}%</td></tr>")


def findings_html(report: ClipReport) -> str:
    """The clip's findings table ("" without a findings head); present ones in bold."""
    if not report.findings:
        return ""
    rows = "".join(_finding_row_html(n, s) for n, s in report.findings.items())
    return ("<table id='pleura-report-findings' style='margin-top:6px'><tr><th>finding</th>"
            "<th>mean over the clip</th><th>max</th><th>share of frames &ge; 50%</th></tr>"
            f"{rows}</table><div style='font-size:12px'>Bold: present (mean &ge; 50%). "
            "Whole-frame probabilities of the frame model's findings head.</div>")


def crops_html(report: ClipReport) -> str:
    """Why the strip shows no crop boxes ("" when it shows them)."""
    note = (report.crops or {}).get("note") or ""
    if not note or (report.crops or {}).get("show", True):
        return ""
    return f"<div class='pl-sub' id='pleura-report-crops'>No crop boxes: {html.escape(note)}.</div>"


def summary_html(report: ClipReport) -> str:
    """The report's headline: video score, each score's share of the evidence, provenance."""
    shares = report.evidence if report.evidence is not None else report.video_probs
    cells = "".join(
        f"<td style='padding:2px 8px;color:#000;background:rgb{overlay.SCORE_RGB[i]};"
        f"{'font-weight:700;outline:2px solid #222' if i == report.video_score else ''}'>"
        f"{i}: {100 * p:.0f}%</td>" for i, p in enumerate(shares))
    what = ("how strongly the clip supports each score (share of the combined evidence; "
            "outlined: the video score)")
    fps = len(report.rows) / report.seconds if report.seconds > 0 else float("nan")
    esc = html.escape  # file, backend and bundle names come from the user: never markup
    return (f"<div id='pleura-report-summary'><div>Video score of <b>{esc(report.clip)}</b></div>"
            f"<div style='font-size:40px;font-weight:700' id='pleura-report-video-score'>"
            f"{report.video_score}</div><div style='font-size:12px'>{what}</div>"
            f"<table><tr>{cells}</tr></table>{findings_html(report)}"
            f"{crops_html(report)}"
            f"{_sim_warning(report)}"
            f"<div>{len(report.rows)} frames scored in {report.seconds:.1f} s "
            f"({fps:.0f} frames/s), backend {esc(str(report.backend))}, "
            f"bundle {esc(str(report.bundle))}</div></div>")


def _sim_warning(report: ClipReport) -> str:
    """A red line when the bundle is not for real scans (manifest ``for_real_scans``)."""
    real, note = report.real_scans
    if real is not False:
        return ""
    return (f"<div id='pleura-report-sim-warning' style='color:#c0003c;font-weight:700'>"
            f"Model bundle {html.escape(str(report.bundle))}: {html.escape(note)}. Its scores "
            f"on a real scan are not meaningful.</div>")


def build_report(path: Path, bundle: str | None, backend: str, limits: UploadLimits,
                 ) -> tuple[ClipReport, dict[int, np.ndarray]]:
    """Score a whole clip (:func:`ui.scoring.score_rows`) into a report; keep the strip's frames.

    Returns:
        The report and {frame index: grey frame} for the frames the strip shows.
    """
    from ui import scoring

    t0 = time.perf_counter()
    got = scoring.score_rows(path, bundle=bundle, backend=backend, max_frames=limits.max_frames,
                             keep=strip_indices, strip_frames=STRIP_FRAMES)
    if not got.rows:
        raise SafetyError(f"{path.name!r} has no decodable frames")
    report = ClipReport(clip=path.name, rows=tuple(got.rows),
                        video_probs=got.rows[-1].video_probs, backend=got.backend,
                        bundle=got.bundle, seconds=time.perf_counter() - t0,
                        findings=got.findings, crops=got.crops, evidence=got.evidence,
                        real_scans=_real_scans(bundle))
    return report, got.frames


def _real_scans(bundle: str | None) -> tuple[bool | None, str]:
    """What the bundle's manifest says about real scans (:func:`engines.bundle.real_scans_of`)."""
    from engines.bundle import default_bundle_path, real_scans_of

    path = Path(bundle) if bundle else default_bundle_path()
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, ""
    return real_scans_of(manifest) if isinstance(manifest, dict) else (None, "")


def make_report(upload: str | None, demo: str | None, clips: dict[str, Path], cfg: PageConfig,
                out_dir: Path | None = None):
    """The report button: (status markdown, summary html, timeline, gallery, files).

    Never raises: a refused or failed clip becomes a status message on the page.
    """
    empty = (None, None, None, None)
    try:
        if upload:
            path = check_upload(upload, cfg.limits)
        elif demo and demo in clips:
            path = check_upload(clips[demo], cfg.limits)
        else:
            raise SafetyError("upload a clip or pick a demo clip first")
        report, frames = build_report(path, cfg.bundle, cfg.backend, cfg.limits)
    except SafetyError as exc:
        return (f"**Not scored:** {exc}", *empty)
    except Exception as exc:  # the page shows a message, never a traceback
        log.exception("report failed")
        return (f"**Scoring failed:** {type(exc).__name__}: {str(exc)[:300]}", *empty)
    out = Path(out_dir or cfg.report_dir or tempfile.mkdtemp(prefix="pleura-report-"))
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(report.clip).stem
    jpath = out / f"{stem}.scores.json"
    jpath.write_text(json.dumps(report.to_json(), indent=1))
    cpath = write_frames_csv(report, out / f"{stem}.scores.csv")
    status = f"Scored **{report.clip}**: video score **{report.video_score}**."
    if report.findings:
        clip_rows = overlay.finding_rows({"video": {"findings": report.findings}})
        status += f" Findings over the clip: {overlay.findings_caption(clip_rows, 'clip')}."
    return (status, summary_html(report), timeline_image(report), strip_images(report, frames),
            [str(jpath), str(cpath)])


def build_report_tab(clips: dict[str, Path], cfg: PageConfig,
                     bundle_of: Callable[[], str | None] | None = None) -> None:
    """Add the report widgets to the current Blocks context.

    Args:
        clips: the demo clips offered.
        cfg: the page's configuration.
        bundle_of: the bundle to score with at the time of the click (the page's bundle
            menu); None: ``cfg.bundle``.
    """
    import gradio as gr

    gr.Markdown("Score a whole clip offline (the same engine path as `pleura score`). "
                f"Limits: {cfg.limits.max_bytes // 2**20} MB, {cfg.limits.max_seconds:.0f} s, "
                f"{', '.join(cfg.limits.extensions)}.")
    with gr.Row():
        upload = gr.File(label="clip", file_types=list(cfg.limits.extensions), type="filepath",
                         elem_id="pleura-report-upload")
        with gr.Column():
            demo = gr.Dropdown(list(clips), value=None, label="or a demo clip")
            go = gr.Button("Score clip", variant="primary", elem_id="pleura-report-go")
    status = gr.Markdown("", elem_id="pleura-report-status")
    summary = gr.HTML("", elem_id="pleura-report-html")
    timeline = gr.Image(label="timeline", type="numpy", interactive=False,
                        elem_id="pleura-report-timeline")
    strip = gr.Gallery(label="frames with overlays (caption: time, the frame's score, the "
                       "running video score)", columns=STRIP_COLUMNS, height="auto",
                       elem_id="pleura-report-strip")
    files = gr.File(label="download", file_count="multiple", interactive=False,
                    elem_id="pleura-report-files")
    def run(up, d):
        return make_report(up, d, clips, cfg if bundle_of is None
                           else replace(cfg, bundle=bundle_of()))

    go.click(run, [upload, demo],
             [status, summary, timeline, strip, files], concurrency_limit=1)
