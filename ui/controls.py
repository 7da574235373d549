"""The live page's controls: source, start/stop/pause, loop, reset, model bundle -> CONTROL.

Each button publishes one CONTROL message (``{"cmd": ...}``, see :mod:`stream.wire`) through
:class:`ui.result_feed.ControlPublisher`; the worker, capture or supervisor act on the commands
they own. The status line says what was sent, or why nothing was.

Recording is the Exam tab's (one MP4 per zone at the source's frame rate, with the per-frame
results beside it, in a folder the page names); the old record switch, which wrote PNG folders
the page never named, is gone from the page (``pleura live --record DIR`` still writes them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ui.bundles import BundleChoice
from ui.result_feed import ControlPublisher
from ui.safety import SafetyError, UploadLimits, check_upload

SOURCE_KINDS = ("demo clip", "upload", "capture device", "stream URL")
DEMO_INFO = ("real-convex-covid.mov is a real scan the default bundle was trained on "
             "(stream/demo/README.md): its score shows the pipeline working, not a held-out "
             "result. demo-convex and demo-linear are simulated.")
"""Under the demo-clip menu: which demo clips are training data (issue #29)."""
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


def playing_clip(source: str | None, clips: dict[str, Path]) -> str | None:
    """The demo-clip menu name of the source that plays now, None when it is not a demo clip
    (an upload, a device, a stream or another file) or nothing plays yet."""
    if not source:
        return None
    try:
        here = Path(source).resolve()
        return next((k for k, v in clips.items() if v.resolve() == here), None)
    except (OSError, ValueError, RuntimeError):
        return None


def default_clip(clips: dict[str, Path]) -> str | None:
    """The menu's clip before anything is known: the one ``pleura live`` plays without
    ``--source`` (:func:`stream.cli_live.demo_clip`) when offered, else the first."""
    from stream.cli_live import demo_clip  # the supervisor's modules: only when asked

    return playing_clip(str(demo_clip()), clips) or next(iter(clips), None)


def menu_for(source: str | None, clips: dict[str, Path]) -> str | None:
    """The demo clip the menu shows: the one playing; none when another source plays (so
    "Use this source" never switches to a clip nobody chose); the default before any result."""
    if not source:
        return default_clip(clips)
    return playing_clip(source, clips)


def use_status(sent: str, uri: str, playing: str | None) -> str:
    """The status line of "Use this source": what was sent and what it replaces."""
    if not sent.startswith("Sent") or not playing:
        return sent
    shown = playing if "://" in playing else Path(playing).name
    try:
        same = uri == playing or Path(uri).resolve() == Path(playing).resolve()
    except (OSError, ValueError, RuntimeError):
        same = False
    if same:
        return f"{sent[:-1]} ({shown} was already playing: it starts again)."
    return f"{sent[:-1]}, replacing {shown}."


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
                   choice: BundleChoice | None = None, exam_dir: Path | None = None,
                   playing: Callable[[], str | None] | None = None) -> gr.Dropdown:
    """Add the control widgets to the current Blocks context and wire their events.

    Args:
        playing: the source URI that plays now (the newest result's), or None; "Use this
            source" says what it replaces.

    Returns:
        The demo-clip menu; the page sets it to :func:`menu_for` the playing source on load.

    Long because Gradio wires events inside the Blocks context where the widgets are made.
    """
    playing = playing or (lambda: None)
    with gr.Accordion("Source and controls", open=True):
        gr.HTML("<div id='pleura-now-playing' class='pl-sub'>Now playing: nothing yet</div>",
                padding=False)
        with gr.Row():
            kind = gr.Radio(list(SOURCE_KINDS), value="demo clip", label="source")
            demo = gr.Dropdown(list(clips), value=default_clip(clips), label="demo clip",
                               elem_id="pleura-demo-choice", info=DEMO_INFO)
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
        sent = _sent(ctl, "source", f"source {Path(uri).name if k != 'stream URL' else uri}",
                     uri=uri, loop=bool(lp))
        return use_status(sent, uri, playing())

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
    return demo
