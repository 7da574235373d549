"""The Gradio page: live view, controls and the offline report. Entry point :func:`serve`.

Process picture (DESIGN.md): capture -> worker -> **ui**. This process subscribes to the
worker's RESULT messages (:mod:`ui.results`), draws them (:mod:`ui.overlay`) and serves the
page; the live image itself travels through :mod:`ui.live`'s endpoints on the same server,
because Gradio's event queue is not a video transport. Buttons send CONTROL messages.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import gradio as gr
from fastapi import Request
from starlette.middleware import Middleware

from ui import controls, exam, live, report
from ui.results import ControlPublisher, ResultStore, ResultSubscriber
from ui.safety import DISCLAIMER, UploadLimits, check_exposure
from ui.uploads import PrivateTempDir, UploadGuard

log = logging.getLogger(__name__)

CSS = """
#pleura-disclaimer {border-left: 4px solid #e6005a; padding-left: 8px;}
.pl-row {display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start;}
.pl-view {flex: 3 1 420px; min-width: 320px;}
.pl-view canvas {width: 100%; height: auto; max-height: 62vh; object-fit: contain;
                 background: #000; border-radius: 4px;}
.pl-side {flex: 1 1 260px; font-size: 14px;}
.pl-big {font-size: 40px; font-weight: 700; line-height: 1.1;}
.pl-bar {display: flex; align-items: center; gap: 6px; font-family: monospace;}
.pl-track {flex: 1; height: 10px; background: #eee; border-radius: 3px; overflow: hidden;}
.pl-track div {height: 100%;}
.pl-side table {width: 100%; border-collapse: collapse;}
.pl-side td {padding: 1px 4px; border-bottom: 1px solid #eee;}
#pleura-timeline {width: 100%; min-height: 120px; margin-top: 8px;}
#pleura-findings td.pl-fbar {width: 45%;}
#pleura-findings .pl-track {position: relative;}
#pleura-findings .pl-track div {background: #555;}
#pleura-findings .pl-track .pl-mark {position: absolute; top: 0; width: 2px; background: #e6005a;}
"""

LIVE_HTML = """
<div id="pleura-live">
 <div class="pl-row">
  <div class="pl-view">
   <canvas id="pleura-canvas" width="640" height="480"></canvas>
   <div>
    <label><input type="checkbox" id="pleura-mask" checked> segmentation mask<span
     id="pleura-mask-note"></span></label>
    &nbsp;<label><input type="checkbox" id="pleura-unc"> uncertainty<span
     id="pleura-unc-note"></span></label>
    &nbsp;<span style="color:#e00">&#9632;</span> crop 1
    &nbsp;<span style="color:#0c0">&#9632;</span> crop 2
    &nbsp;(<span id="pleura-conn">connecting</span>)
   </div>
  </div>
  <div class="pl-side">
   <div>Frame score</div><div class="pl-big" id="pleura-frame-score">&ndash;</div>
   <div id="pleura-frame-probs"></div>
   <div style="margin-top:8px">Video score (running,
    <span id="pleura-video-n">0</span> frames)</div>
   <div class="pl-big" id="pleura-video-score">&ndash;</div>
   <div id="pleura-video-probs"></div>
   <div id="pleura-findings" hidden style="margin-top:8px">
    <div>Findings (bar: this frame; <span style="color:#e6005a">|</span> and right column:
     mean over the video)</div>
    <table id="pleura-findings-rows"></table>
   </div>
   <table style="margin-top:8px">
    <tr><td>display fps</td><td id="pleura-fps">&ndash;</td></tr>
    <tr><td>end-to-end latency (ms)</td><td id="pleura-latency">&ndash;</td></tr>
    <tr><td>UI to screen (ms)</td><td id="pleura-display-latency">&ndash;</td></tr>
    <tr><td>worker latency (ms)</td><td id="pleura-worker-latency">&ndash;</td></tr>
    <tr><td>worker fps</td><td id="pleura-worker-fps">&ndash;</td></tr>
    <tr><td>frames skipped</td><td id="pleura-skipped">&ndash;</td></tr>
    <tr><td>backend</td><td id="pleura-backend">&ndash;</td></tr>
    <tr><td>bundle</td><td id="pleura-bundle">&ndash;</td></tr>
    <tr><td>source</td><td id="pleura-source">&ndash;</td></tr>
    <tr><td>source state</td><td id="pleura-state">&ndash;</td></tr>
   </table>
  </div>
 </div>
 <img id="pleura-timeline" alt="timeline: frame scores and running video score">
</div>
"""


@dataclass(frozen=True)
class UiConfig:
    """Everything the page needs.

    Attributes:
        results_addr: where the worker publishes RESULT messages (we connect, SUB).
        control_addr: where CONTROL messages go (we connect a PUB unless ``control_bind``),
            one address or several; None disables the control buttons.
        host, port: where the page is served. Anything but loopback needs ``auth``.
        auth: (user, password) or None.
        share: create a public Gradio share link (needs ``auth``).
        bundle: model bundle for the offline report (None: the default bundle).
        backend: engine backend for the offline report.
        bundle_info: a label for the bundle shown on the page.
        demo_dir: folder of demo clips offered as sources.
        limits: upload limits.
        control_bind: bind the control address instead of connecting to it.
        report_dir: where report files are written (None: the server's temporary folder,
            removed on exit).
        live_limits: bounds of the live endpoints (long-polls, streams, deadlines).
    """

    results_addr: str
    control_addr: str | tuple[str, ...] | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    auth: tuple[str, str] | None = None
    share: bool = False
    bundle: str | None = None
    backend: str = "auto"
    bundle_info: str = ""
    demo_dir: Path | None = None
    limits: UploadLimits = field(default_factory=UploadLimits)
    control_bind: bool = False
    report_dir: Path | None = None
    live_limits: live.LiveLimits = field(default_factory=live.LiveLimits)


def demo_clips(demo_dir: Path | None) -> dict[str, Path]:
    """{file name: path} of the demo clips (``stream/demo/*.mp4`` by default)."""
    if demo_dir is None:
        import stream

        demo_dir = Path(stream.__file__).resolve().parent / "demo"
    if not demo_dir.is_dir():
        return {}
    exts = {".mp4", ".avi", ".mov", ".gif", ".mkv"}
    return {p.name: p for p in sorted(demo_dir.iterdir()) if p.suffix.lower() in exts}


def build_blocks(cfg: UiConfig, ctl: ControlPublisher,
                 store: ResultStore | None = None) -> gr.Blocks:
    """The page layout: a Live tab (view + controls), an Exam tab and a Report tab."""
    clips = demo_clips(cfg.demo_dir)
    with gr.Blocks(title="pleura: lung-ultrasound scoring") as blocks:
        gr.Markdown("## pleura: lung-ultrasound scoring (Roy et al., IEEE TMI 2020)")
        gr.Markdown(f"**{DISCLAIMER}**", elem_id="pleura-disclaimer")
        with gr.Tab("Live", id="live"):
            gr.HTML(LIVE_HTML, padding=False)
            controls.build_controls(ctl, clips, cfg.limits)
        with gr.Tab("Exam", id="exam"):
            exam.build_exam_tab(exam.ExamDesk(store, cfg.bundle, cfg.backend,
                                              export_dir=cfg.report_dir))
        with gr.Tab("Report", id="report"):
            report.build_report_tab(clips, cfg)
        if cfg.bundle_info:
            gr.Markdown(f"Bundle: `{cfg.bundle_info}`")
    return blocks


def _auth_checker(app, auth: tuple[str, str] | None):
    """Request -> logged in? Uses Gradio's own login cookie, so one login covers both."""
    if auth is None:
        return None

    def check(request: Request) -> bool:
        cid = getattr(app, "cookie_id", "")
        token = (request.cookies.get(f"access-token-{cid}")
                 or request.cookies.get(f"access-token-unsecure-{cid}"))
        return token is not None and token in getattr(app, "tokens", {})

    return check


class Server:
    """A running page: the Gradio app, the result subscriber and the control socket.

    Uploads, Gradio's cache and reports go to a private temporary folder that :meth:`close`
    removes.
    """

    def __init__(self, cfg: UiConfig) -> None:
        check_exposure(cfg.host, cfg.share, cfg.auth)
        self.temp = PrivateTempDir()  # before the Blocks: Gradio reads it when they are built
        if cfg.report_dir is None:
            cfg = replace(cfg, report_dir=self.temp.path / "reports")
        self.cfg = cfg
        self.store = ResultStore()
        self.subscriber = ResultSubscriber(cfg.results_addr, self.store)
        self.control = ControlPublisher(cfg.control_addr, bind=cfg.control_bind)
        self.renderer = live.FrameRenderer()
        self.blocks = build_blocks(cfg, self.control, self.store)
        self.url = ""
        self._stop = threading.Event()  # wait() returns when set; open live streams end
        self._closed = threading.Event()  # close() ran

    def start(self) -> str:
        """Start serving (non-blocking); returns the local URL."""
        self.subscriber.start()
        self.subscriber.ready.wait(5)
        app, url, share_url = self.blocks.launch(
            server_name=self.cfg.host, server_port=self.cfg.port, auth=self.cfg.auth,
            share=self.cfg.share, prevent_thread_lock=True, quiet=True, show_error=False,
            max_file_size=self.cfg.limits.max_bytes, ssr_mode=False, footer_links=[],
            head=f"<script>{live.live_js()}\n{exam.exam_js()}</script>", css=CSS,
            app_kwargs={"middleware": [Middleware(UploadGuard, limits=self.cfg.limits)]},
        )
        app.include_router(live.live_router(self.store, self.renderer,
                                            _auth_checker(app, self.cfg.auth),
                                            limits=self.cfg.live_limits, stopping=self._stop))
        self.url = share_url or url
        log.info("pleura UI on %s (results from %s, control to %s)", url,
                 self.cfg.results_addr, ", ".join(self.control.addrs) or "none")
        return self.url

    def wait(self) -> None:
        """Block until :meth:`close`, Ctrl-C or SIGTERM (how the supervisor stops us)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving, close the sockets, delete the temporary folder (idempotent)."""
        self._stop.set()
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self.blocks.close()
        finally:
            self.subscriber.stop()
            self.control.close()
            self.temp.close()


def serve(results_addr: str, control_addr: str | Sequence[str] | None = None,
          host: str = "127.0.0.1",
          port: int = 7860, auth: tuple[str, str] | None = None, bundle_info: str = "",
          *, share: bool = False, bundle: str | None = None, backend: str = "auto",
          demo_dir: Path | None = None, control_bind: bool = False,
          block: bool = True) -> Server:
    """Serve the page (the supervisor's entry point for the UI process).

    Args:
        results_addr: RESULT address to subscribe to, e.g. ``tcp://127.0.0.1:5556``.
        control_addr: CONTROL address(es), or None (the buttons then say there is no control).
        host, port: bind address of the page; non-loopback needs ``auth``.
        auth: (user, password) or None.
        bundle_info: bundle label shown on the page.
        share, bundle, backend, demo_dir, control_bind: see :class:`UiConfig`.
        block: wait until Ctrl-C / SIGTERM (True) or return the running :class:`Server`.

    Raises:
        ui.safety.SafetyError: exposure without authentication.
    """
    if control_addr is not None and not isinstance(control_addr, str):
        control_addr = tuple(control_addr)
    cfg = UiConfig(results_addr=results_addr, control_addr=control_addr, host=host, port=port,
                   auth=auth, share=share, bundle=bundle, backend=backend,
                   bundle_info=bundle_info, demo_dir=demo_dir, control_bind=control_bind)
    server = Server(cfg)
    server.start()
    if block:
        server.wait()
    return server
