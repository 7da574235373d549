"""HTTP endpoints of the live view, served from Gradio's own FastAPI app.

Gradio's event transport is built for request/response, not video, so the live frame has its
own small endpoints on the same server (and the same login):

- ``GET pleura/frame.jpg?after=N&mask=1&unc=0&text=1`` long-polls for the newest result newer than
  ``N`` and answers one JPEG with overlays, its metadata in ``X-Pleura-*`` headers. The page's
  script asks for the next frame only after it has drawn the last one, so the browser always
  gets the newest result and never a backlog (latest wins end to end).
- ``GET pleura/live.mjpg`` the same frames as an MJPEG stream (any ``<img>`` or VLC can show it).
- ``GET pleura/timeline.png`` the timeline plot (frame scores + running video score).
- ``GET pleura/state.json`` the newest result's JSON and the timeline, for scripts and tests.

Each overlay combination of a result is rendered once and shared by all viewers.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import fastapi
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ui import overlay
from ui.results import LiveResult, ResultStore

ASSETS = Path(__file__).with_name("assets")
META_KEYS = ("seq", "stream_id", "source", "score", "probs", "video", "latency_ms", "skipped",
             "fps", "backend", "bundle", "source_state", "timing_ms")
"""RESULT JSON keys copied into the ``X-Pleura-Meta`` header (the masks stay out)."""


class FrameRenderer:
    """Renders results to JPEG with overlays; caches the last few (result, options) pairs."""

    def __init__(self, quality: int = 80, cache: int = 8) -> None:
        self.quality = quality
        self._cache: OrderedDict[tuple[int, bool, bool, bool], bytes] = OrderedDict()
        self._size = cache
        self._lock = threading.Lock()
        self.rendered = 0

    def jpeg(self, r: LiveResult, show_mask: bool, show_unc: bool,
             show_text: bool = True) -> bytes:
        key = (r.n, show_mask, show_unc, show_text)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        rgb = overlay.render_result(r.frame, r.meta, show_mask=show_mask,
                                    show_uncertainty=show_unc, show_text=show_text)
        data = overlay.encode_jpeg(rgb, self.quality)
        with self._lock:
            self._cache[key] = data
            self.rendered += 1
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return data


def result_headers(r: LiveResult) -> dict[str, str]:
    """``X-Pleura-*`` headers: counter, seq, grab / UI-receive times and the compact metadata."""
    meta = finite({k: r.meta.get(k) for k in META_KEYS if k in r.meta})
    mask = r.meta.get("mask") or {}
    meta["has_mask"] = bool(mask.get("png_b64"))
    meta["has_unc"] = bool(mask.get("unc_png_b64"))
    return {
        "X-Pleura-N": str(r.n),
        "X-Pleura-Seq": str(r.seq),
        "X-Pleura-T-Grabbed": repr(r.t_grabbed),
        "X-Pleura-T-Received": repr(r.t_received),
        "X-Pleura-T-Served": repr(time.time()),
        "X-Pleura-Meta": json.dumps(meta, separators=(",", ":"), ensure_ascii=True,
                                    allow_nan=False, default=str),
        "Cache-Control": "no-store",
    }


def finite(obj):
    """A JSON-able copy with NaN/inf floats replaced by None (browsers reject NaN in JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def _flag(v: str | None, default: bool) -> bool:
    return default if v is None else v.lower() in ("1", "true", "yes", "on")


def live_router(store: ResultStore, renderer: FrameRenderer,
                auth_check: Callable[[Request], bool] | None = None,
                max_wait_s: float = 2.0) -> fastapi.APIRouter:
    """The live endpoints (see the module docstring) bound to one store.

    Args:
        store: where the subscriber thread puts results.
        renderer: the shared JPEG renderer.
        auth_check: called with each request; False -> 401. None = open (loopback only, the
            safety rules guarantee that).
        max_wait_s: longest long-poll.
    """

    def guard(request: Request) -> None:
        if auth_check is not None and not auth_check(request):
            raise fastapi.HTTPException(status_code=401, detail="log in on the page first")

    router = fastapi.APIRouter(dependencies=[fastapi.Depends(guard)])

    # Plain `def` endpoints: FastAPI runs them in its thread pool, so a long poll never blocks
    # the event loop that Gradio's own events use.
    @router.get("/pleura/frame.jpg")
    def frame_jpg(after: int = 0, mask: str | None = None, unc: str | None = None,
                  text: str | None = None, wait: float = 1.0) -> Response:
        r = store.wait_newer(after, min(max(wait, 0.0), max_wait_s))
        if r is None:
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        data = renderer.jpeg(r, _flag(mask, True), _flag(unc, False), _flag(text, True))
        return Response(content=data, media_type="image/jpeg", headers=result_headers(r))

    @router.get("/pleura/live.mjpg")
    def live_mjpg(mask: str | None = None, unc: str | None = None,
                  frames: int = 0) -> StreamingResponse:
        """``frames`` > 0 ends the stream after that many frames (snapshots, tests)."""
        show_mask, show_unc = _flag(mask, True), _flag(unc, False)

        def parts() -> Iterator[bytes]:
            last, sent = 0, 0
            while frames <= 0 or sent < frames:
                r = store.wait_newer(last, max_wait_s)
                if r is None:
                    continue
                last, sent = r.n, sent + 1
                data = renderer.jpeg(r, show_mask, show_unc)
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                       + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")

        return StreamingResponse(parts(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store"})

    @router.get("/pleura/timeline.png")
    def timeline_png(w: int = 640, h: int = 180) -> Response:
        fs, vs, ex = store.timeline()
        img = overlay.render_timeline(fs, vs, width=min(max(w, 200), 2000),
                                      height=min(max(h, 80), 800), expected=ex)
        return Response(content=overlay.encode_png(img), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    @router.get("/pleura/state.json")
    def state_json() -> JSONResponse:
        r = store.latest()
        fs, vs, _ = store.timeline()
        body = {"received": store.received, "timeline": {"frame": fs, "video": vs},
                "latest": None}
        if r is not None:
            meta = finite({k: r.meta.get(k) for k in META_KEYS if k in r.meta})
            body["latest"] = {"n": r.n, "seq": r.seq, "t_grabbed": r.t_grabbed,
                              "t_received": r.t_received, "meta": meta}
        return JSONResponse(finite(body),
                            headers={"Cache-Control": "no-store"})

    return router


def live_js() -> str:
    """The page script that drives the live view (``ui/assets/live.js``)."""
    return (ASSETS / "live.js").read_text(encoding="utf-8")
