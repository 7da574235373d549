"""Ray backend: an :class:`~engines.base.Engine` whose models run on a Ray Serve application.

``engines.create_engine(bundle, "ray", address=...)`` (``pleura worker --backend ray
--serve-address ADDR``, ``pleura score --backend ray``) gives a :class:`RayEngine`. It sends
each preprocessed batch to the ``pleura serve`` application (:mod:`engines.serve`) and packs
the answer into the same :class:`~engines.base.FrameOutput` / :class:`~engines.base.SegOutput`
as a local engine, so every caller (the worker's scoring path, ``pleura score``) is unchanged and
its per-stream state (running uninorm, findings, recorder) stays where it was: in the caller.

Failure handling (issue #17):

- a call that fails or times out (a replica killed mid-request, a hung replica) is retried,
  Serve's router sending it to a live replica, for at most ``retry_s``; the stall is counted
  (``gap_ms_max``, ``retries``) in :meth:`RayEngine.status`, which the worker puts in its
  heartbeat. Frames that arrive meanwhile are conflated by the worker's sockets (latest wins).
- the application unreachable (no cluster, not deployed, every retry failed) -> the batch is
  scored by a local engine of the same bundle (``fallback=True``, the default: the worker
  has the bundle on disk anyway) and :attr:`RayEngine.backend` says so, which the worker
  publishes in every RESULT's ``backend`` (shown on the page). A background thread probes the
  application every ``reconnect_s`` and switches back when it answers. With
  ``fallback=False`` such batches raise instead (the worker counts and drops them).
- the application serves another model (frame-model sha256 differs from the local bundle's):
  refused at construction with an error that says which bundle to deploy.

``ray`` is imported only when this backend is created: the bedside runtime never needs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.backends.common import check_input
from engines.base import Engine, FrameOutput, SegOutput
from engines.bundle import Bundle, load_bundle, sha256_file
from engines.serve import APP_NAME, DEPLOYMENT_NAME, import_ray

log = logging.getLogger(__name__)


class RemoteUnavailableError(RuntimeError):
    """The Serve application did not answer within the retry window."""


@dataclass
class RemoteStats:
    """Counters of a :class:`RayEngine` (JSON-able via :meth:`RayEngine.status`).

    Attributes:
        calls: remote calls answered.
        retries: failed or timed-out attempts that were retried.
        gave_up: calls abandoned after ``retry_s`` (their batch went to the fallback or failed).
        gap_ms_max: longest stall of one call between its first failure and its answer (or
            giving up), in ms.
        gap_ms_total: the sum of those stalls.
        fallback_batches: batches scored by the local fallback engine.
        fallback_frames: frames in those batches.
        replicas_seen: pids of the replicas that answered (a killed one is replaced).
        merged_max: most frames in one replica engine run that held this engine's frames
            (more than its own batch: ``serve.batch`` merged other callers' frames in).
        last_error: the last remote error, one line.
    """

    calls: int = 0
    retries: int = 0
    gave_up: int = 0
    gap_ms_max: float = 0.0
    gap_ms_total: float = 0.0
    fallback_batches: int = 0
    fallback_frames: int = 0
    replicas_seen: tuple[int, ...] = ()
    merged_max: int = 0
    last_error: str | None = None


def tcp_reachable(address: str, timeout_s: float = 2.0) -> bool | None:
    """For a ``host:port`` address: whether a TCP connection opens within ``timeout_s``
    (so an unreachable head costs seconds, not Ray's connect timeout). None for ``auto``,
    ``ray://…`` and other forms Ray resolves itself."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit() or not host:
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Restore SIGTERM / SIGINT handlers after the block: ``ray.init`` replaces SIGTERM's with
    ``sys.exit`` in the main thread, and the worker's own handler (a clean stop, exit 0, the
    recorder finalised) must stay in force."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            if handler is not None:
                signal.signal(s, handler)


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RayEngine(Engine):
    """A bundle's models on the ``pleura serve`` application (see the module doc).

    Args:
        bundle: the caller's bundle (preprocessing spec, finding names, the local fallback);
            must be the one the application serves (same ``frame.onnx`` sha256).
        address: Ray cluster address (``host:6379``, ``ray://host:10001`` or ``auto``);
            None: ``$RAY_ADDRESS`` or ``auto`` (the cluster this machine runs).
        threads: CPU threads of the local fallback engine.
        frame_model: frame model of the local fallback engine (``auto``, ``fp32``, ``int8``).
        app_name: Serve application name (``pleura serve --app-name``).
        fallback: score locally while the application is unreachable.
        call_timeout_s: longest wait for one remote call.
        retry_s: longest time one batch is retried on other replicas before giving up.
        reconnect_s: how often an unreachable application is probed again.

    Raises:
        ImportError: ``ray`` is not installed and ``fallback`` is False.
        RemoteUnavailableError: the application is unreachable and ``fallback`` is False.
        ValueError: the application serves a different bundle.
    """

    backend = "ray"

    def __init__(self, bundle: Bundle | str | Path, address: str | None = None,
                 threads: int | None = None, app_name: str = APP_NAME, fallback: bool = True,
                 call_timeout_s: float = 5.0, retry_s: float = 5.0,
                 reconnect_s: float = 5.0, frame_model: str = "auto") -> None:
        self.bundle = load_bundle(bundle)
        self.address = address or os.environ.get("RAY_ADDRESS") or "auto"
        self.app_name, self.threads, self.fallback = app_name, threads, fallback
        self._local_opts = {} if frame_model == "auto" else {"frame_model": frame_model}
        self.call_timeout_s, self.retry_s, self.reconnect_s = call_timeout_s, retry_s, reconnect_s
        self.stats = RemoteStats()
        self.remote_info: dict[str, Any] | None = None
        self.mode = "connecting"  # remote | fallback | down
        self.detail = ""
        self._handle: Any = None
        self._local: Engine | None = None
        self._owns_ray = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        self._sha = sha256_file(self.bundle.frame_file)
        try:
            self._connect()
        except ValueError:
            raise  # another bundle is served: a configuration error, never a fallback
        except Exception as exc:  # noqa: BLE001 - ImportError, ConnectionError, Ray's own
            self._unreachable(f"cannot reach the Serve application {self.app_name!r} at "
                              f"{self.address} ({_one_line(exc)})", initial=True)

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        """Join the cluster (once), get the deployment handle, check the served bundle."""
        ray, serve = import_ray()
        if not ray.is_initialized():
            if tcp_reachable(self.address) is False:
                raise ConnectionError(f"no Ray head answers at {self.address}; start one "
                                      "(`ray start --head`) or fix --serve-address")
            with keep_signal_handlers():
                ray.init(address=self.address, log_to_driver=False,
                         logging_level=logging.WARNING)
            self._owns_ray = True
        handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=self.app_name)
        info = handle.info.remote().result(timeout_s=max(self.call_timeout_s, 10.0))
        if info.get("frame_sha256") != self._sha:
            raise ValueError(
                f"the Serve application {self.app_name!r} at {self.address} serves bundle "
                f"{info.get('bundle')!r} (frame model sha256 {str(info.get('frame_sha256'))[:12]}"
                f"…), not this bundle {self.bundle.name!r} ({self._sha[:12]}…); deploy this "
                f"one with `pleura serve --bundle {self.bundle.path}` or pass --bundle with "
                "the served bundle")
        self._handle, self.remote_info = handle, info
        self.mode, self.detail = "remote", ""
        log.info("ray backend: application %r at %s (%s on %s)", self.app_name, self.address,
                 info.get("backend"), info.get("device"))

    def _unreachable(self, why: str, initial: bool = False) -> None:
        """Switch to the fallback (or to ``down``) and start probing in the background."""
        self.stats.last_error = why
        if not self.fallback:
            self.mode, self.detail = "down", why
            if initial:
                raise RemoteUnavailableError(f"{why}; start it with `pleura serve --bundle "
                                             f"{self.bundle.path}` or use --backend "
                                             "onnxruntime")
        else:
            self._local_engine()
            self.mode, self.detail = "fallback", why
        log.warning("ray backend: %s; %s", why, "scoring with the local engine" if
                    self.fallback else "batches fail until it is back")
        if self._prober is None or not self._prober.is_alive():
            self._prober = threading.Thread(target=self._probe_loop, name="ray-reconnect",
                                            daemon=True)
            self._prober.start()

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.reconnect_s):
            try:
                with self._lock:
                    self._connect()
                log.warning("ray backend: application %r is back; scoring remotely again",
                            self.app_name)
                return
            except ImportError:
                return  # ray is not installed: it will not appear while this process runs
            except Exception as exc:  # noqa: BLE001 - keep probing, remember why
                self.detail = self.stats.last_error = _one_line(exc)

    def _local_engine(self) -> Engine:
        if self._local is None:
            from engines.backends import create_engine

            self._local = create_engine(self.bundle, backend="auto", threads=self.threads,
                                        **self._local_opts)
        return self._local

    # ------------------------------------------------------------------ calls
    def _call(self, method: str, *args: Any) -> dict[str, Any]:
        """One remote call, retried on other replicas for at most ``retry_s``.

        Raises:
            RemoteUnavailableError: no answer within ``retry_s``.
            RuntimeError: the replica's own code failed (not retried: it would fail again).
        """
        ray, _ = import_ray()
        t0, attempt = time.monotonic(), 0
        while True:
            resp = None
            try:
                resp = getattr(self._handle, method).remote(*args)
                out = resp.result(timeout_s=self.call_timeout_s)
                self._answered(t0, attempt, out)
                return out
            except ray.exceptions.RayTaskError as exc:
                if not isinstance(exc, ray.exceptions.RayActorError):
                    raise RuntimeError(f"the Serve replica failed on this batch: "
                                       f"{_one_line(exc)}") from None
                err: BaseException = exc
            except Exception as exc:  # noqa: BLE001 - dead/unavailable replica, timeout, ...
                err = exc
                if isinstance(exc, TimeoutError) and resp is not None:
                    resp.cancel()
            attempt += 1
            self.stats.retries += 1
            self.stats.last_error = _one_line(err)
            if time.monotonic() - t0 >= self.retry_s:
                self._stalled(t0)
                self.stats.gave_up += 1
                raise RemoteUnavailableError(f"no answer from the Serve application "
                                             f"{self.app_name!r} in {self.retry_s:.0f} s "
                                             f"({_one_line(err)})")
            log.warning("ray backend: %s failed (%s); retrying on another replica", method,
                        _one_line(err))
            time.sleep(min(0.05 * attempt, 0.5))

    def _answered(self, t0: float, attempt: int, out: Any) -> None:
        self.stats.calls += 1
        if attempt:
            self._stalled(t0)
        pid = out.get("replica") if isinstance(out, dict) else None
        merged = out.get("merged") if isinstance(out, dict) else None
        if isinstance(merged, int):
            self.stats.merged_max = max(self.stats.merged_max, merged)
        if isinstance(pid, int) and pid not in self.stats.replicas_seen:
            self.stats.replicas_seen = (*self.stats.replicas_seen, pid)

    def _stalled(self, t0: float) -> None:
        gap = (time.monotonic() - t0) * 1000.0
        self.stats.gap_ms_total = round(self.stats.gap_ms_total + gap, 1)
        self.stats.gap_ms_max = round(max(self.stats.gap_ms_max, gap), 1)

    def _run(self, method: str, local: Callable[[Engine], Any], n: int, *args: Any) -> Any:
        """Remote when connected; else (or when the remote gives up) the local fallback."""
        if self.mode == "remote":
            try:
                return self._call(method, *args)
            except RemoteUnavailableError as exc:
                self._unreachable(str(exc))
        if self.mode == "down" or self._local is None:
            raise RemoteUnavailableError(f"the Serve application {self.app_name!r} is unreachable "
                                    f"({self.detail}); batch not scored")
        self.stats.fallback_batches += 1
        self.stats.fallback_frames += n
        return local(self._local)

    # ------------------------------------------------------------------ Engine
    def frame(self, x: np.ndarray) -> FrameOutput:
        x = check_input(x, self.bundle.frame_spec, "frame")
        out = self._run("frame", lambda e: e.frame(x), len(x), x)
        if isinstance(out, FrameOutput):
            return out
        b = len(x)
        f = out.get("findings")
        return FrameOutput(probs=np.asarray(out["probs"], np.float32).reshape(b, -1),
                           theta1=np.asarray(out["theta1"], np.float32).reshape(b, 2, 3),
                           theta2=np.asarray(out["theta2"], np.float32).reshape(b, 2, 3),
                           findings=None if f is None else
                           np.asarray(f, np.float32).reshape(b, -1))

    def has_segmentation(self) -> bool:
        return self.bundle.has_segmentation()

    def segment(self, x: np.ndarray, mc_samples: int = 0) -> SegOutput:
        if not self.bundle.has_segmentation() or self.bundle.seg_spec is None:
            raise NotImplementedError("this bundle has no segmentation model")
        x = check_input(x, self.bundle.seg_spec, "seg")
        out = self._run("segment", lambda e: e.segment(x, mc_samples), len(x), x, mc_samples)
        if isinstance(out, SegOutput):
            return out
        return SegOutput(probs=np.asarray(out["probs"], np.float32), std=out.get("std"))

    @property
    def device(self) -> str:
        """The replicas' device while remote ("cpu" / "cuda"), the fallback's otherwise."""
        if self.mode == "remote" and self.remote_info:
            return str(self.remote_info.get("device", "cpu"))
        return str(getattr(self._local, "device", "cpu"))

    def describe(self) -> str:
        """One line (at most 250 characters) for logs and the page: where the frames are
        scored right now."""
        if self.mode == "remote":
            info = self.remote_info or {}
            text = (f"ray ({self.app_name} at {self.address}: {info.get('backend', '?')} on "
                    f"{info.get('device', '?')})")
        elif self.fallback:
            local = getattr(self._local, "backend", "none")
            text = f"ray unreachable -> local {local} ({self.detail})"
        else:
            text = f"ray down ({self.detail})"
        return text if len(text) <= 250 else text[:249] + "…"

    def status(self) -> dict[str, Any]:
        """JSON-able state for the worker's heartbeat: mode, address, counters."""
        return {"backend": "ray", "mode": self.mode, "address": self.address,
                "app": self.app_name, "detail": self.detail or None, "describe": self.describe(),
                **asdict(self.stats), "replicas_seen": list(self.stats.replicas_seen)}

    def close(self) -> None:
        self._stop.set()
        if self._local is not None:
            self._local.close()
        if self._owns_ray:
            ray, _ = import_ray()
            ray.shutdown()
            self._owns_ray = False
