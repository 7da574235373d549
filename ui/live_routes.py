"""HTTP endpoints of the live view, served from Gradio's own FastAPI app.

Gradio's event transport is built for request/response, not video, so the live frame has its
own small endpoints on the same server (and the same login):

- ``GET pleura/frame.jpg?after=N&mask=1&unc=0&text=1[&boxes=1]`` long-polls for the newest
  result newer than ``N`` and answers one JPEG with overlays, its metadata in ``X-Pleura-*``
  headers and the source state (:mod:`ui.livestate`) in ``X-Pleura-State``, also on an empty
  answer. The page's script asks for the next frame only after it has drawn the last one, so
  the browser always gets the newest result and never a backlog (latest wins end to end).
- ``GET pleura/live.mjpg`` the same frames as an MJPEG stream (any ``<img>`` or VLC can show it).
- ``GET pleura/timeline.png`` the timeline plot (frame scores + running video score over
  seconds of the video).
- ``GET pleura/state.json`` the newest result's JSON and the timeline, for scripts and tests.

Each overlay combination of a result is rendered once and shared by all viewers. Every
parameter is parsed and bounded (:mod:`ui.bounds`): a bad value is a 400 naming it, more
long-polls or streams than :class:`LiveLimits` allows get a 503, and each has a deadline.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import fastapi
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ui import overlay, timeline
from ui.bounds import BoundedStream, Gate, flag_param, float_param, int_param
from ui.certainty import result_certainty
from ui.livestate import page_state
from ui.result_feed import LiveResult, ResultStore

ASSETS = Path(__file__).with_name("assets")
META_KEYS = ("seq", "stream_id", "source", "score", "probs", "video", "findings", "latency_ms",
             "skipped", "fps", "backend", "bundle", "source_state", "source_detail",
             "status_only", "resent", "crops", "mask_display", "pts_s", "timing_ms")
"""RESULT JSON keys (:class:`stream.messages.Result`) copied into the ``X-Pleura-Meta``
header."""


class FrameRenderer:
    """Renders results to JPEG with overlays; caches the last few (result, options) pairs."""

    def __init__(self, quality: int = 80, cache: int = 8) -> None:
        self.quality = quality
        self._cache: OrderedDict[tuple[int, bool, bool, bool, bool], bytes] = OrderedDict()
        self._size = cache
        self._lock = threading.Lock()
        self.rendered = 0

    def jpeg(self, r: LiveResult, show_mask: bool, show_unc: bool,
             show_text: bool = True, show_boxes: bool | None = None) -> bytes:
        """The result drawn as JPEG; ``show_boxes`` None follows the bundle's default."""
        if show_boxes is None:
            show_boxes = overlay.boxes_by_default(r.meta)
        key = (r.n, show_mask, show_unc, show_text, show_boxes)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        rgb = overlay.render_result(r.frame, r.meta, show_mask=show_mask,
                                    show_uncertainty=show_unc, show_text=show_text,
                                    show_boxes=show_boxes, mask=r.mask, unc=r.unc)
        data = overlay.encode_jpeg(rgb, self.quality)
        with self._lock:
            self._cache[key] = data
            self.rendered += 1
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return data


def state_header(store: ResultStore) -> str:
    """The page's source state now (:func:`ui.livestate.page_state`) as compact JSON."""
    latest = store.latest()
    state = page_state(latest.meta if latest else None, store.fresh_age())
    return json.dumps(finite(state), separators=(",", ":"), ensure_ascii=True)


def result_headers(r: LiveResult, state: str = "",
                   bundle_scans: Mapping[str, dict] | None = None) -> dict[str, str]:
    """``X-Pleura-*`` headers: counter, seq, grab / UI-receive times, the compact metadata and
    the page's source state (``X-Pleura-State``, :func:`state_header`).

    The metadata adds what the page says about the result: ``certainty`` (frame and video
    score uncertain or not, and why: :func:`ui.certainty.result_certainty`) and
    ``bundle_scans`` (``{"real", "note"}`` of the result's bundle from ``bundle_scans``,
    :func:`ui.bundles.bundle_scans`; None for a bundle the page does not know)."""
    meta = finite({k: r.meta.get(k) for k in META_KEYS if k in r.meta})
    meta["has_mask"] = r.mask is not None
    meta["has_unc"] = r.unc is not None
    meta["finding_rows"] = overlay.finding_rows(r.meta)  # labelled for the page; [] if none
    meta["certainty"] = finite(result_certainty(r.meta))
    meta["bundle_scans"] = (bundle_scans or {}).get(str(r.meta.get("bundle")))
    h, w = r.frame.shape[:2]
    meta["crop_notes"] = overlay.crop_notes(r.meta.get("boxes"), w, h)
    return {
        "X-Pleura-State": state,
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


MAX_N = 2**53
"""Largest ``after`` accepted (the store's counter never gets near it)."""


@dataclass(frozen=True)
class LiveLimits:
    """What the live endpoints may cost, so no request can hang or starve the page (issue #15).

    Attributes:
        max_wait_s: longest long-poll of ``frame.jpg`` (``wait`` above it is a 400).
        polls: ``frame.jpg`` long-polls at once, each on a thread of its own; one more is a 503.
        streams: MJPEG streams at once; one more is a 503.
        max_stream_s: hard end of one MJPEG stream (a viewer reconnects).
        renders: JPEG / PNG encodes at once (more wait their turn, holding no thread).
    """

    max_wait_s: float = 2.0
    polls: int = 16
    streams: int = 4
    max_stream_s: float = 600.0
    renders: int = 4


def live_router(store: ResultStore, renderer: FrameRenderer,
                auth_check: Callable[[Request], bool] | None = None,
                max_wait_s: float | None = None, limits: LiveLimits | None = None,
                stopping: threading.Event | None = None,
                bundle_scans: Mapping[str, dict] | None = None) -> fastapi.APIRouter:
    """The live endpoints (see the module docstring) bound to one store.

    The endpoints are ``async`` and run their blocking work on the threads of their own
    :class:`ui.bounds.Gate`, never on the server's shared thread pool: a flood of long-polls
    gets 503s while ``state.json`` and Gradio's own routes keep answering.

    Args:
        store: where the subscriber thread puts results.
        renderer: the shared JPEG renderer.
        auth_check: called with each request; False -> 401. None = open (loopback only, the
            safety rules guarantee that).
        max_wait_s: longest long-poll (overrides ``limits.max_wait_s``).
        limits: the bounds; :class:`LiveLimits` defaults when None.
        stopping: set when the server closes; open MJPEG streams end within ``max_wait_s``.
        bundle_scans: {bundle name: {"real", "note"}} (:func:`ui.bundles.bundle_scans`), so the
            page says when a bundle is not for real scans.

    Long because the endpoints are closures over one store, renderer and gate (FastAPI
    routes registered on one router); the work they do lives in :class:`FrameRenderer` and
    :mod:`ui.livestate`.
    """
    lim = limits or LiveLimits()
    if max_wait_s is not None:
        lim = replace(lim, max_wait_s=max_wait_s)
    stopping = stopping or threading.Event()
    polls, streams = Gate("long-polls", lim.polls), Gate("MJPEG streams", lim.streams)
    renders = anyio.CapacityLimiter(lim.renders)

    async def guard(request: Request) -> None:  # async: a login check needs no thread
        if auth_check is not None and not auth_check(request):
            raise fastapi.HTTPException(status_code=401, detail="log in on the page first")

    async def newer(after: int, wait_s: float) -> LiveResult | None:
        latest = store.latest()
        if latest is not None and after > latest.n:
            after = 0  # a counter from an earlier server (the UI restarted): serve the newest
        if wait_s == 0 or (latest is not None and latest.n > after):
            return store.wait_newer(after, 0.0)
        slot = polls.enter()
        try:
            return await anyio.to_thread.run_sync(store.wait_newer, after, wait_s,
                                                  limiter=polls.limiter)
        finally:
            slot.release()

    router = fastapi.APIRouter(dependencies=[fastapi.Depends(guard)])

    @router.get("/pleura/frame.jpg")
    async def frame_jpg(after: str | None = None, mask: str | None = None,
                        unc: str | None = None, text: str | None = None,
                        wait: str | None = None, boxes: str | None = None) -> Response:
        """``boxes`` absent: the bundle's default (:func:`ui.overlay.boxes_by_default`).
        An empty answer (204) still carries the source state (``X-Pleura-State``)."""
        n = int_param("after", after, 0, 0, MAX_N)
        wait_s = float_param("wait", wait, min(1.0, lim.max_wait_s), 0.0, lim.max_wait_s)
        show = (flag_param("mask", mask, True), flag_param("unc", unc, False),
                flag_param("text", text, True),
                None if boxes is None else flag_param("boxes", boxes, True))
        r = await newer(n, wait_s)
        if r is None:
            return Response(status_code=204, headers={"Cache-Control": "no-store",
                                                      "X-Pleura-State": state_header(store)})
        data = await anyio.to_thread.run_sync(renderer.jpeg, r, *show, limiter=renders)
        return Response(content=data, media_type="image/jpeg",
                        headers=result_headers(r, state_header(store), bundle_scans))

    @router.get("/pleura/live.mjpg")
    async def live_mjpg(mask: str | None = None, unc: str | None = None,
                        frames: str | None = None) -> StreamingResponse:
        """``frames`` > 0 ends the stream after that many frames (snapshots, tests)."""
        show_mask, show_unc = flag_param("mask", mask, True), flag_param("unc", unc, False)
        n_frames = int_param("frames", frames, 0, 0, 1_000_000)

        async def parts() -> AsyncIterator[bytes]:
            last, sent, t_end = 0, 0, time.monotonic() + lim.max_stream_s
            while (n_frames <= 0 or sent < n_frames) and not stopping.is_set():
                left = t_end - time.monotonic()
                if left <= 0:
                    return  # the deadline: end the stream cleanly (the viewer reconnects)
                r = await anyio.to_thread.run_sync(store.wait_newer, last,
                                                   min(left, lim.max_wait_s),
                                                   limiter=streams.limiter)
                if r is None:
                    continue
                last, sent = r.n, sent + 1
                data = await anyio.to_thread.run_sync(renderer.jpeg, r, show_mask, show_unc,
                                                      limiter=renders)
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                       + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")

        # The stream ends itself at max_stream_s; the response's own deadline is the backstop
        # for a client that stopped reading (its send blocks, so the loop never gets there).
        return BoundedStream(parts(), streams.enter(), lim.max_stream_s + lim.max_wait_s + 5,
                             media_type="multipart/x-mixed-replace; boundary=frame",
                             headers={"Cache-Control": "no-store"})

    @router.get("/pleura/timeline.png")
    async def timeline_png(w: str | None = None, h: str | None = None) -> Response:
        width, height = int_param("w", w, 640, 200, 2000), int_param("h", h, 180, 80, 800)
        fs, vs, ex = store.timeline()
        ts = store.timeline_times()

        def draw() -> bytes:
            img = timeline.render_timeline(fs, vs, width=width, height=height, expected=ex,
                                           times=ts if len(ts) == len(fs) else None)
            return overlay.encode_png(img)

        data = await anyio.to_thread.run_sync(draw, limiter=renders)
        return Response(content=data, media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    @router.get("/pleura/state.json")
    async def state_json() -> JSONResponse:  # async: answers even when every thread is busy
        r = store.latest()
        fs, vs, _ = store.timeline()
        body = {"received": store.received,
                "timeline": {"frame": fs, "video": vs, "t": store.timeline_times()},
                "state": page_state(r.meta if r else None, store.fresh_age()), "latest": None}
        if r is not None:
            meta = finite({k: r.meta.get(k) for k in META_KEYS if k in r.meta})
            body["latest"] = {"n": r.n, "seq": r.seq, "t_grabbed": r.t_grabbed,
                              "t_received": r.t_received, "meta": meta}
        return JSONResponse(finite(body), headers={"Cache-Control": "no-store"})

    return router


def live_js() -> str:
    """The page script that drives the live view (``ui/assets/live.js``)."""
    return (ASSETS / "live.js").read_text(encoding="utf-8")
