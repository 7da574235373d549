"""The live page's controls: source, start/stop/pause, loop, reset, model bundle -> CONTROL.

Each button publishes one CONTROL message (``{"cmd": ...}``, see :mod:`stream.wire`) through
:class:`ui.result_feed.ControlPublisher`; the worker, capture or supervisor act on the commands
they own. The status line says what was sent, or why nothing was.

Recording is the Exam tab's (one MP4 per zone at the source's frame rate, with the per-frame
results beside it, in a folder the page names); the old record switch, which wrote PNG folders
the page never named, is gone from the page (``pleura live --record DIR`` still writes them).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ui.bundles import BundleChoice
from ui.result_feed import ControlPublisher
from ui.safety import SafetyError, UploadLimits, check_upload

SOURCE_KINDS = ("demo clip", "upload", "capture device", "stream URL")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "udp://", "http://", "https://", "srt://", "rtmp://")


def source_uri(kind: str, demo: str | None, upload: str | None, device: str | None,
               url: str | None, clips: dict[str, Path], limits: UploadLimits) -> str:
    """The source URI the controls describe, validated.

    Raises:
        SafetyError: with a message for the page (unknown clip, bad upload, bad URL...).
    """
    if kind == "demo clip":
        if not demo or demo not in clips:
            raise SafetyError(f"pick a demo clip (available: {', '.join(clips) or 'none'})")
        return str(clips[demo])
    if kind == "upload":
        return str(check_upload(upload, limits))
    if kind == "capture device":
        dev = (device or "").strip()
        if not dev.startswith(("v4l2://", "/dev/video")):
            raise SafetyError("a capture device looks like v4l2:///dev/video0")
        return dev if dev.startswith("v4l2://") else "v4l2://" + dev
    if kind == "stream URL":
        u = (url or "").strip()
        if not u.startswith(STREAM_SCHEMES):
            raise SafetyError(f"a stream URL starts with one of {', '.join(STREAM_SCHEMES)}")
        return u
    raise SafetyError(f"unknown source kind {kind!r}; use one of {', '.join(SOURCE_KINDS)}")


def _sent(ctl: ControlPublisher, cmd: str, what: str, **params) -> str:
    if not ctl.send(cmd, **params):
        return "No control address: start the page with --control-addr (pleura live does)."
    return f"Sent: {what}."


def recording_note(exam_dir: Path) -> str:
    """Where recordings go, for the Live tab (the Exam tab records)."""
    return (f"**Recording:** record a zone's clip in the **Exam** tab: an MP4 at the source's "
            f"frame rate with each frame's results beside it (JSONL), saved in the exam's "
            f"folder under `{exam_dir}`.")


def switch_bundle(ctl: ControlPublisher, choice: BundleChoice, label: str) -> str:
    """The bundle menu: make ``label`` the page's bundle and ask the supervisor to restart the
    worker on it; the status line for the page."""
    try:
        path = choice.choose(label)
    except ValueError as exc:
        return f"Not changed: {exc}"
    return _sent(ctl, "bundle", f"switch the model to {label}. The worker restarts on it (a "
                 "few seconds without new frames) and the video score starts again", path=str(path))


def build_controls(ctl: ControlPublisher, clips: dict[str, Path], limits: UploadLimits,
                   choice: BundleChoice | None = None, exam_dir: Path | None = None) -> None:
    """Add the control widgets to the current Blocks context and wire their events."""
    with gr.Accordion("Source and controls", open=True):
        with gr.Row():
            kind = gr.Radio(list(SOURCE_KINDS), value="demo clip", label="source")
            demo = gr.Dropdown(list(clips), value=next(iter(clips), None), label="demo clip")
            upload = gr.File(label="upload a clip", file_types=list(limits.extensions),
                             type="filepath", visible=False)
            device = gr.Textbox("v4l2:///dev/video0", label="capture device", visible=False)
            url = gr.Textbox("", label="stream URL", placeholder="rtsp://host:8554/scanner",
                             visible=False)
        with gr.Row():
            loop = gr.Checkbox(True, label="loop files")
            use = gr.Button("Use this source", variant="primary")
            start = gr.Button("Start")
            pause = gr.Button("Pause")
            resume = gr.Button("Resume")
            stop = gr.Button("Stop")
            reset = gr.Button("Reset video score")
        bundle = None
        if choice is not None:
            bundle = gr.Dropdown(list(choice.options), value=choice.label, label="model bundle",
                                 elem_id="pleura-bundle-choice")
        if exam_dir is not None:
            gr.Markdown(recording_note(exam_dir), elem_id="pleura-recording-note")
        status = gr.Markdown("", elem_id="pleura-control-status")

    def on_kind(k: str):
        return (gr.update(visible=k == "demo clip"), gr.update(visible=k == "upload"),
                gr.update(visible=k == "capture device"), gr.update(visible=k == "stream URL"))

    kind.change(on_kind, kind, [demo, upload, device, url], queue=False)

    def on_use(k, d, up, dev, u, lp):
        try:
            uri = source_uri(k, d, up, dev, u, clips, limits)
        except SafetyError as exc:
            return f"Not changed: {exc}"
        return _sent(ctl, "source", f"source {Path(uri).name if k != 'stream URL' else uri}",
                     uri=uri, loop=bool(lp))

    use.click(on_use, [kind, demo, upload, device, url, loop], status)
    for btn, cmd, what in ((start, "start", "start"), (pause, "pause", "pause"),
                           (resume, "resume", "resume"), (stop, "stop", "stop"),
                           (reset, "reset", "reset the video score")):
        btn.click(lambda c=cmd, w=what: _sent(ctl, c, w), None, status, queue=False)
    loop.change(lambda v: _sent(ctl, "loop", f"loop {'on' if v else 'off'}", on=bool(v)),
                loop, status, queue=False)
    if bundle is not None and choice is not None:
        bundle.input(lambda label: switch_bundle(ctl, choice, label), bundle, status,
                     queue=False)
