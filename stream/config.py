"""One config: every setting of every process, defined once, read from TOML / JSON / flags.

Each stage has a frozen dataclass of *settings* (what a user chooses) and, extending it, the
process config (settings + the addresses :func:`stream.pipeline.compose` fills in):

=================  ===================  ======================================================
file section       settings             process config (``pleura <process> --config FILE``)
=================  ===================  ======================================================
``[capture]``      CaptureSettings      CaptureConfig (one per source: source, addresses)
``[worker]``       WorkerSettings       WorkerConfig (frames, results, control, status)
``[ui]``           UiSettings           UiConfig (results, control, bundle, backend)
``[live]``         LiveSettings         (``pleura live`` itself: sources, headless, ...)
``[topology]``     Topology             (who binds which address; compose fills the gaps)
=================  ===================  ======================================================

A field made with :func:`option` is an option: its name is the file key, ``--name-with-dashes``
the flag (:mod:`stream.options` builds the parsers from these fields), its annotation the type,
its default the default, its ``help`` the help text. So a new worker option is one
``option(...)`` line in :class:`WorkerSettings`: ``pleura worker`` and ``pleura live`` get the
flag, the ``[worker]`` section gets the key, and the supervisor hands it to the worker process
in the JSON file it passes as ``--config`` (never as rebuilt argv).

Reading checks every key and type and says what is wrong::

    [worker] unknown key 'seg_rate'; valid keys: backend, bundle, display_max, ...
    worker.seg_hz must be a number, got str '2'
    [worker] seg_hz must be > 0, got -1.0

(:mod:`stream.configfile` reads and writes the files.)

The documented example is ``stream/pleura.example.toml``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from stream.streamtable import DEFAULT_IDLE_S, DEFAULT_MAX_STREAMS

T = TypeVar("T")

HIDDEN = "==SUPPRESS=="
"""``help`` of an option that has a flag but is not listed (argparse.SUPPRESS)."""


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the key and the fix."""


# --------------------------------------------------------------------------- option fields


def option(default: Any = MISSING, help: str = "", *, choices: tuple | None = None,  # noqa: A002
           check: Callable[[Any], None] | None = None, flag: str | None = None,
           metavar: str | None = None, cli: bool = True) -> Any:
    """A dataclass field that is an option (file key, flag, type, default and help in one).

    Args:
        default: the default (none: required).
        help: one line for ``--help`` and the example file (:data:`HIDDEN`: no help line).
        choices: the allowed values, or None.
        check: raises ValueError for a bad value (e.g. :func:`positive`).
        flag: the flag, when not ``--`` + the name with dashes.
        cli: False: a file key only (no flag).
    """
    return field(default=default, metadata={"help": help, "choices": choices, "check": check,
                                            "flag": flag, "metavar": metavar, "cli": cli})


def positive(x: float) -> None:
    if not x > 0:
        raise ValueError(f"must be > 0, got {x}")


def at_least(n: int) -> Callable[[int], None]:
    def check(x: int) -> None:
        if x < n:
            raise ValueError(f"must be >= {n}, got {x}")
    return check


def port_number(x: int) -> None:
    if not 1 <= x <= 65535:
        raise ValueError(f"must be a port number 1..65535, got {x}")


def option_fields(cls: type) -> list[Field]:
    """The option fields of a config class (dataclass fields made with :func:`option`)."""
    return [f for f in fields(cls) if "help" in f.metadata]


def flag_of(f: Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def check_value(f: Field, value: Any) -> None:
    """``value`` against ``f``'s choices and check.

    Raises:
        ConfigError: naming the key and what it must be.
    """
    if value is None:
        return
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{f.name} must be one of {', '.join(map(str, choices))}; "
                          f"got {value!r}")
    check = f.metadata.get("check")
    if check is not None:
        try:
            check(value)
        except ValueError as exc:
            raise ConfigError(f"{f.name} {exc}") from None


class Options:
    """Base of every config dataclass: values are checked when the object is made."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in option_fields(type(self)):
            check_value(f, getattr(self, f.name))


# --------------------------------------------------------------------------- the stages


def bundle_option() -> Any:
    return option(None, "model bundle folder (default: the bundled one)", metavar="DIR")


def backend_option() -> Any:
    return option("auto", "engine backend (ray: the `pleura serve` application, the [serve] "
                          "extra)", choices=("auto", "onnxruntime", "tensorrt", "ray"))


@dataclass(frozen=True)
class CaptureSettings(Options):
    """What every capture does with its source (:mod:`stream.capture`, :mod:`stream.sources`)."""

    SECTION: ClassVar[str] = "capture"

    loop: bool | None = option(None, "files: start again at the end (default: on for the "
                                     "demo clip)")
    speed: float = option(1.0, "files: playback speed factor", check=positive)
    fps: float = option(30.0, "image folders: frames per second", check=positive)
    size: str | None = option(None, "capture card: WxH, e.g. 1920x1080")
    device_fps: float | None = option(None, "capture card: frame rate", check=positive)
    pixel_format: str | None = option(None, "capture card: e.g. mjpeg, yuyv422")
    roi: str | None = option(None, "scan-region crop: auto | off | x,y,w,h (default: auto for "
                                   "live sources, off for files)")
    colour: bool = option(False, "send RGB frames instead of grey (the models use grey)")


@dataclass(frozen=True, kw_only=True)
class CaptureConfig(CaptureSettings):
    """One capture process: its settings, its source and its addresses."""

    source: str = option(help="file, image folder, v4l2:///dev/videoN or stream URL")
    frames_addr: str = option(help="address to bind for frames, e.g. tcp://0.0.0.0:5555",
                              flag="--frames", metavar="ADDR")
    stream_id: int = option(0, "this source's id on the wire", check=at_least(0))
    status_addr: str | None = option(None, "supervisor heartbeat address", flag="--status",
                                     metavar="ADDR")
    control_addr: str | None = option(None, "address to bind for pause/resume",
                                      flag="--control", metavar="ADDR")
    seconds: float | None = option(None, "stop after this long", check=positive)


@dataclass(frozen=True)
class WorkerSettings(Options):
    """How the worker scores (:mod:`stream.worker`, :class:`stream.workercore.Worker`)."""

    SECTION: ClassVar[str] = "worker"

    bundle: str | None = bundle_option()
    backend: str = backend_option()
    threads: int | None = option(None, "frame-model CPU threads (default: all cores, or all "
                                       "but one when a segmentation lane runs on the CPU)",
                                 check=at_least(1))
    seg: str = option("auto", "segmentation: inline every frame (GPU), a rate-limited lane "
                              "(CPU), off; auto: inline on a GPU, else lane",
                      choices=("auto", "lane", "inline", "off"))
    seg_hz: float = option(2.0, "highest rate of the segmentation lane", check=positive)
    mc_samples: int = option(0, "MC-dropout passes for the uncertainty map (0 = none)",
                             check=at_least(0))
    frame_model: str = option("auto", "ONNX Runtime frame model: the bundle's CPU default, "
                                      "fp32 or int8", choices=("auto", "fp32", "int8"))
    max_streams: int = option(DEFAULT_MAX_STREAMS, "most streams whose state the worker holds; "
                              "the least recently seen is forgotten first", check=at_least(1))
    stream_idle_s: float = option(DEFAULT_IDLE_S, "the worker forgets a stream silent for "
                                  "this long (seconds)", check=positive)
    serve_address: str | None = option(None, "--backend ray: Ray cluster address of the "
                                       "`pleura serve` application (HOST:6379 or auto; default "
                                       "$RAY_ADDRESS, else auto); unreachable: the local engine "
                                       "scores, and the page says so", metavar="ADDR")
    display_max: int = option(640, "long side of the display frame sent with each result "
                                   "(smaller: less bandwidth to a remote page)",
                              check=at_least(16))


@dataclass(frozen=True, kw_only=True)
class WorkerConfig(WorkerSettings):
    """One worker process: its settings and its addresses (``restarted`` / ``standby``: set by
    the supervisor for a replacement / hot-spare worker)."""

    frames_addrs: tuple[str, ...] = option(help="frames address to subscribe to (repeat for "
                                                "several sources)", flag="--frames",
                                           metavar="ADDR")
    results_addr: str = option(help="address to bind for results", flag="--results",
                               metavar="ADDR")
    control_addr: str | None = option(None, "address to bind for CONTROL (reset)",
                                      flag="--control", metavar="ADDR")
    status_addr: str | None = option(None, "supervisor heartbeat address", flag="--status",
                                     metavar="ADDR")
    restarted: bool = option(False, HIDDEN)
    standby: bool = option(False, "load the model, then wait for SIGUSR1 before serving "
                                  "(hot spare)")


@dataclass(frozen=True)
class UiSettings(Options):
    """Where and for whom the page is served (:mod:`ui.cli`, :func:`ui.app.serve`)."""

    SECTION: ClassVar[str] = "ui"

    host: str = option("127.0.0.1", "bind address of the page (anything but loopback needs "
                                    "auth, and TLS for the login)")
    port: int = option(7860, "port of the page", check=port_number)
    auth: str | None = option(None, "require a login USER:PASSWORD (or set PLEURA_AUTH)",
                              metavar="USER:PASSWORD")
    share: bool = option(False, "create a public Gradio share link (needs auth)")
    demo_dir: str | None = option(None, "folder of demo clips offered as sources (default: "
                                        "stream/demo)", metavar="DIR")
    tls_cert: str | None = option(None, "serve the page over HTTPS with this certificate (PEM; "
                                        "needs --tls-key)", metavar="FILE")
    tls_key: str | None = option(None, "private key of --tls-cert (PEM, no passphrase)",
                                 metavar="FILE")
    allow_plain_http: bool = option(False, "accept a login beyond loopback over plain HTTP "
                                           "(the password crosses the network in clear text)")
    allowed_hosts: tuple[str, ...] = option((), "a host name the page answers to besides "
                                                "loopback, IP addresses and --host (the name in "
                                                "the browser's address bar); repeat for several",
                                            flag="--allowed-host", metavar="NAME")


@dataclass(frozen=True, kw_only=True)
class UiConfig(UiSettings):
    """One UI process: its settings, the worker's addresses and the bundle for the report."""

    results_addr: str = option(help="worker RESULT address to subscribe to, e.g. "
                                    "tcp://127.0.0.1:5556", flag="--results", metavar="ADDR")
    control_addrs: tuple[str, ...] = option((), "CONTROL address for the buttons (reset, "
                                            "pause, source, ...); repeat to reach several",
                                            flag="--control", metavar="ADDR")
    control_bind: bool = option(False, "bind the control address instead of connecting to it")
    bundle: str | None = bundle_option()
    backend: str = backend_option()


@dataclass(frozen=True)
class LiveSettings(Options):
    """What ``pleura live`` runs (:mod:`stream.cli_live`)."""

    SECTION: ClassVar[str] = "live"

    sources: tuple[str, ...] = option((), "file, image folder, v4l2:///dev/videoN or stream "
                                          "URL; repeat for several sources (default: the demo "
                                          "clip, looped)", flag="--source", metavar="SRC")
    headless: bool = option(False, "no UI; print / write statistics")
    seconds: float | None = option(None, "stop after this long", check=positive)
    stats_json: str | None = option(None, "write run statistics here at the end",
                                    metavar="FILE")
    record: str | None = option(None, "record frames (lossless) and results (JSONL) to DIR",
                                metavar="DIR")
    transport: str = option("ipc", "local sockets between the processes",
                            choices=("ipc", "tcp"))


@dataclass(frozen=True)
class Topology(Options):
    """Who binds which address and who fans out (unset: :func:`stream.pipeline.compose` picks
    an ipc:// file or a free loopback port).

    - ``frames[i]``: capture i binds (PUB); the worker (SUB, CONFLATE: newest frame wins) and
      the recorder connect.
    - ``results``: the worker binds (PUB); the UI, the supervisor's statistics and the
      recorder connect. Set it (e.g. ``tcp://0.0.0.0:5556``) for a ``pleura ui`` elsewhere.
    - ``worker_control``, ``capture_controls[i]``: the worker / capture i binds (SUB); the
      supervisor connects one PUB to all of them: the fan-out of the page's commands.
    - ``ui_control``: the supervisor binds (SUB); the UI connects its PUB (the buttons).
    - ``status``: the supervisor binds (PULL); every process pushes its heartbeats.
    """

    SECTION: ClassVar[str] = "topology"

    frames: tuple[str, ...] = option((), "frames address of each source", cli=False)
    capture_controls: tuple[str, ...] = option((), "control address of each capture",
                                               cli=False)
    results: str | None = option(None, "results address", cli=False)
    worker_control: str | None = option(None, "worker control address", cli=False)
    ui_control: str | None = option(None, "the page's control address", cli=False)
    status: str | None = option(None, "heartbeat address", cli=False)

    def wiring(self) -> list[tuple[str, str, str]]:
        """(address, bound by, connected by) for every address, for logs and docs."""
        rows = [(a, f"capture-{i}", "worker, recorder") for i, a in enumerate(self.frames)]
        rows += [(self.results or "", "worker", "ui, supervisor, recorder"),
                 (self.worker_control or "", "worker", "supervisor (fan-out)")]
        rows += [(a, f"capture-{i}", "supervisor (fan-out)")
                 for i, a in enumerate(self.capture_controls)]
        rows += [(self.ui_control or "", "supervisor", "ui"),
                 (self.status or "", "supervisor", "every process")]
        return rows


@dataclass(frozen=True)
class PleuraConfig:
    """A whole config file (``pleura live --config pleura.toml``): one section per stage."""

    live: LiveSettings = field(default_factory=LiveSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    ui: UiSettings = field(default_factory=UiSettings)
    topology: Topology = field(default_factory=Topology)


SECTIONS = tuple(f.name for f in fields(PleuraConfig))


def extend(cls: type[T], settings: Options, **wiring: Any) -> T:
    """The process config ``cls`` made of ``settings`` (its base class) and ``wiring``."""
    return cls(**{f.name: getattr(settings, f.name) for f in fields(settings)}, **wiring)


def settings_of(cfg: Options, cls: type[T]) -> T:
    """The ``cls`` part (a base class of ``cfg``'s) of a process config."""
    return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})
