"""The Gradio page: live view, controls and the offline report. Entry point :func:`serve`.

Process picture (DESIGN.md): capture -> worker -> **ui**. This process subscribes to the
worker's RESULT messages (:mod:`ui.result_feed`), draws them (:mod:`ui.overlay`) and serves the
page; the live image itself travels through :mod:`ui.live_routes`'s endpoints on the same server,
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

from ui import controls, exam, live_routes, report
from ui.bundles import BundleChoice, bundle_scans
from ui.httpguard import HostGuard, LoginLimits, LoginThrottle, allowed_names, host_name
from ui.livepage import CSS, live_html
from ui.result_feed import ControlPublisher, ResultStore, ResultSubscriber
from ui.safety import DISCLAIMER, UploadLimits, check_exposure, check_transport
from ui.uploads import PrivateTempDir, UploadGuard

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PageConfig:
    """Everything the page needs (built by :func:`serve` from :class:`stream.config.UiConfig`).

    Attributes:
        results_addr: where the worker publishes RESULT messages (we connect, SUB).
        control_addr: where CONTROL messages go (we connect a PUB unless ``control_bind``),
            one address or several; None disables the control buttons.
        host, port: where the page is served. Anything but loopback needs ``auth``, and a
            login beyond loopback needs TLS (or ``allow_plain_http``).
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
        tls_cert, tls_key: serve HTTPS with this certificate and key (PEM files), or None.
        allow_plain_http: accept a login beyond loopback over plain HTTP.
        allowed_hosts: host names answered besides loopback, IP addresses and ``host``
            (:mod:`ui.httpguard`).
        login_limits: how failed logins are throttled.
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
    live_limits: live_routes.LiveLimits = field(default_factory=live_routes.LiveLimits)
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_plain_http: bool = False
    allowed_hosts: tuple[str, ...] = ()
    login_limits: LoginLimits = field(default_factory=LoginLimits)


def demo_clips(demo_dir: Path | None) -> dict[str, Path]:
    """{file name: path} of the demo clips (``stream/demo/*.mp4`` by default)."""
    if demo_dir is None:
        import stream

        demo_dir = Path(stream.__file__).resolve().parent / "demo"
    if not demo_dir.is_dir():
        return {}
    exts = {".mp4", ".avi", ".mov", ".gif", ".mkv"}
    return {p.name: p for p in sorted(demo_dir.iterdir()) if p.suffix.lower() in exts}


def build_blocks(cfg: PageConfig, ctl: ControlPublisher,
                 store: ResultStore | None = None) -> gr.Blocks:
    """The page layout: a Live tab (view + controls), an Exam tab and a Report tab."""
    clips = demo_clips(cfg.demo_dir)
    choice = BundleChoice(cfg.bundle)
    desk = exam.ExamDesk(store, cfg.bundle, cfg.backend, export_dir=cfg.report_dir)
    choice.on_change(desk.use_bundle)  # the exam scores with the bundle the page shows
    with gr.Blocks(title="pleura: lung-ultrasound scoring") as blocks:
        gr.Markdown("## pleura: lung-ultrasound scoring (Roy et al., IEEE TMI 2020)")
        gr.Markdown(f"**{DISCLAIMER}**", elem_id="pleura-disclaimer")
        with gr.Tab("Live", id="live"):
            gr.HTML(live_html(), padding=False)
            demo = controls.build_controls(ctl, clips, cfg.limits, choice, desk.root,
                                           playing=lambda: _playing(store))
        with gr.Tab("Exam", id="exam"):
            exam.build_exam_tab(desk)
        with gr.Tab("Report", id="report"):
            report.build_report_tab(clips, cfg, bundle_of=lambda: str(choice.path))
        # the demo menu names the clip that plays, not the first file of the folder
        blocks.load(lambda: gr.update(value=controls.menu_for(_playing(store), clips)), None,
                    demo, queue=False)
    return blocks


def _playing(store: ResultStore | None) -> str | None:
    """The source URI of the newest result (None before the first)."""
    latest = store.latest() if store is not None else None
    src = latest.meta.get("source") if latest is not None else None
    return src if isinstance(src, str) and src else None


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

    def __init__(self, cfg: PageConfig) -> None:
        check_exposure(cfg.host, cfg.share, cfg.auth)
        check_transport(cfg.host, cfg.auth, cfg.tls_cert, cfg.tls_key, cfg.allow_plain_http)
        self.host_names = allowed_names(cfg.host, cfg.allowed_hosts)
        self.temp = PrivateTempDir()  # before the Blocks: Gradio reads it when they are built
        if cfg.report_dir is None:
            cfg = replace(cfg, report_dir=self.temp.path / "reports")
        self.cfg = cfg
        self.store = ResultStore()
        self.subscriber = ResultSubscriber(cfg.results_addr, self.store)
        self.control = ControlPublisher(cfg.control_addr, bind=cfg.control_bind)
        self.renderer = live_routes.FrameRenderer()
        self.blocks = build_blocks(cfg, self.control, self.store)
        self.url = ""
        self._stop = threading.Event()  # wait() returns when set; open live streams end
        self._closed = threading.Event()  # close() ran

    def middleware(self) -> list[Middleware]:
        """In front of Gradio's routes, outermost first: the Host check and security headers,
        the login throttle (with a login), the upload limits."""
        guards = [Middleware(HostGuard, names=self.host_names)]
        if self.cfg.auth is not None:
            guards.append(Middleware(LoginThrottle, limits=self.cfg.login_limits))
        return [*guards, Middleware(UploadGuard, limits=self.cfg.limits)]

    def start(self) -> str:
        """Start serving (non-blocking); returns the local URL."""
        self.subscriber.start()
        self.subscriber.ready.wait(5)
        cfg = self.cfg
        app, url, share_url = self.blocks.launch(
            server_name=cfg.host, server_port=cfg.port, auth=cfg.auth,
            share=cfg.share, prevent_thread_lock=True, quiet=True, show_error=False,
            max_file_size=cfg.limits.max_bytes, ssr_mode=False, footer_links=[],
            head=f"<script>{live_routes.live_js()}\n{exam.exam_js()}</script>", css=CSS,
            app_kwargs={"middleware": self.middleware()},
            # the start-up self-check calls this server by its bind address, which a
            # certificate for the host's name does not cover
            ssl_certfile=cfg.tls_cert, ssl_keyfile=cfg.tls_key, ssl_verify=False,
        )
        if share_url:  # the share tunnel forwards requests under its own name
            self.host_names.add(host_name(share_url.split("//", 1)[-1].split("/", 1)[0]))
        app.include_router(live_routes.live_router(self.store, self.renderer,
                                            _auth_checker(app, self.cfg.auth),
                                            limits=self.cfg.live_limits, stopping=self._stop,
                                            bundle_scans=bundle_scans(self.cfg.bundle)))
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
          tls_cert: str | None = None, tls_key: str | None = None,
          allow_plain_http: bool = False, allowed_hosts: Sequence[str] = (),
          block: bool = True) -> Server:
    """Serve the page (the supervisor's entry point for the UI process).

    Args:
        results_addr: RESULT address to subscribe to, e.g. ``tcp://127.0.0.1:5556``.
        control_addr: CONTROL address(es), or None (the buttons then say there is no control).
        host, port: bind address of the page; non-loopback needs ``auth``.
        auth: (user, password) or None.
        bundle_info: bundle label shown on the page.
        share, bundle, backend, demo_dir, control_bind, tls_cert, tls_key, allow_plain_http,
            allowed_hosts: see :class:`PageConfig`.
        block: wait until Ctrl-C / SIGTERM (True) or return the running :class:`Server`.

    Raises:
        ui.safety.SafetyError: exposure without authentication, a login over plain HTTP beyond
            loopback, or TLS files that do not load.
    """
    if control_addr is not None and not isinstance(control_addr, str):
        control_addr = tuple(control_addr)
    cfg = PageConfig(results_addr=results_addr, control_addr=control_addr, host=host, port=port,
                   auth=auth, share=share, bundle=bundle, backend=backend,
                   bundle_info=bundle_info, demo_dir=demo_dir, control_bind=control_bind,
                   tls_cert=tls_cert, tls_key=tls_key, allow_plain_http=allow_plain_http,
                   allowed_hosts=tuple(allowed_hosts))
    server = Server(cfg)
    server.start()
    if block:
        server.wait()
    return server
