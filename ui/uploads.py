"""Uploads to the page: video files only, size-capped, kept in a folder removed on exit.

Gradio's upload route stores any file it is sent; the ``file_types`` of ``gr.File`` only filter
the browser's file picker. :class:`UploadGuard` sits in front of that route: a body larger than
the limit is refused from its ``Content-Length`` before it is read (413), a body without one
(``Transfer-Encoding: chunked``) is counted as it arrives and refused the moment it passes the
limit, with nothing more read and what Gradio stored of it deleted (413), and a stored file
whose name is not a video type is deleted and refused (415). :class:`PrivateTempDir` gives one
server its own temporary folder (uploads, Gradio's cache, reports) and removes it on close, so
nothing uploaded outlives the process (issue #15).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ui.safety import UploadLimits

log = logging.getLogger(__name__)

UPLOAD_PATH = "/gradio_api/upload"
MULTIPART_SLACK = 64 * 1024
"""Bytes of multipart framing allowed above ``max_bytes`` (headers, boundaries, file name)."""


def refused_types(paths: list[str], limits: UploadLimits) -> list[str]:
    """The file types (endings) among ``paths`` that ``limits`` does not accept."""
    return sorted({Path(p).suffix.lower() or "(none)" for p in paths
                   if Path(p).suffix.lower() not in limits.extensions})


def remove_uploads(paths: list[str]) -> None:
    """Delete stored uploads and the per-file folders Gradio made for them (when empty)."""
    for p in map(Path, paths):
        p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty, or already gone
            p.parent.rmdir()


class UploadGuard:
    """ASGI middleware: size and type limits on Gradio's upload route.

    Args:
        app: the ASGI app (Gradio's FastAPI app).
        limits: accepted endings and the largest file.
    """

    def __init__(self, app: ASGIApp, limits: UploadLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or not scope.get("path", "").endswith(UPLOAD_PATH)):
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.limits.max_bytes + MULTIPART_SLACK:
            await _plain(send, 413, f"upload of {length / 1e6:.1f} MB refused; the limit is "
                         f"{self.limits.max_bytes / 1e6:.0f} MB", close=True)
            return
        start: Message = {}
        body: list[bytes] = []
        received, most = 0, self.limits.max_bytes + MULTIPART_SLACK
        refusal = (f"upload refused: more than the limit of {self.limits.max_bytes / 1e6:.0f} MB "
                   "(the maximum allowed size)")

        async def counted() -> Message:  # a chunked body has no Content-Length to check
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > most:
                    raise UploadTooLargeError(refusal)
            return message

        async def hold(message: Message) -> None:  # the answer is a short JSON list of paths
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                if received > most:  # whatever the route made of the error: a 413
                    await _plain(send, 413, refusal, close=True)
                else:
                    await self._answer(start, b"".join(body), send)

        try:
            await self.app(scope, counted, hold)
        except UploadTooLargeError:  # not turned into an answer by the route: answer here
            await _plain(send, 413, refusal, close=True)
        if received > most:
            log.warning("refused an upload without Content-Length after %.1f MB (limit %.0f MB);"
                        " the rest was not read", received / 1e6, self.limits.max_bytes / 1e6)

    async def _answer(self, start: Message, body: bytes, send: Send) -> None:
        paths = _stored_paths(start, body)
        bad = refused_types(paths, self.limits)
        if bad:
            remove_uploads(paths)
            log.warning("refused an upload of type %s (deleted)", ", ".join(bad))
            await _plain(send, 415, f"file type {', '.join(bad)} is not accepted; upload a "
                         f"video: {', '.join(self.limits.extensions)}")
            return
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})


class UploadTooLargeError(MultiPartException):
    """Raised from the body reader when an upload passes the limit. A multipart error, so the
    upload route's parser stops reading, deletes the part files it wrote and answers."""


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _stored_paths(start: Message, body: bytes) -> list[str]:
    """Paths in a successful upload answer (a JSON list of strings); [] otherwise."""
    if start.get("status") != 200:
        return []
    try:
        paths = json.loads(body)
    except ValueError:
        return []
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


async def _plain(send: Send, status: int, text: str, close: bool = False) -> None:
    """A short text answer; ``close``: end the connection after it, so the server reads no more
    of a refused body (it would otherwise read and drop the rest to keep the connection)."""
    data = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"connection", b"close")] * close})
    await send({"type": "http.response.body", "body": data, "more_body": False})


class PrivateTempDir:
    """A temporary folder for one server, made Gradio's upload / cache folder until closed.

    Gradio reads ``GRADIO_TEMP_DIR`` whenever it stores a file, so the variable is pointed at
    this folder while the server runs (the UI process runs one server) and restored on close.
    """

    ENV = "GRADIO_TEMP_DIR"

    def __init__(self) -> None:
        self._previous = os.environ.get(self.ENV)
        self.path = Path(tempfile.mkdtemp(prefix="pleura-ui-", dir=self._previous or None))
        os.environ[self.ENV] = str(self.path)

    def close(self) -> None:
        """Delete the folder and everything in it; restore ``GRADIO_TEMP_DIR`` (idempotent)."""
        if os.environ.get(self.ENV) == str(self.path):
            if self._previous is None:
                os.environ.pop(self.ENV, None)
            else:
                os.environ[self.ENV] = self._previous
        shutil.rmtree(self.path, ignore_errors=True)
