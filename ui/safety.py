"""What the web page may expose, and what it accepts: bind address, authentication, uploads.

Rules (issue 8): the page binds 127.0.0.1 by default; binding any other interface or creating a
public share link needs authentication (``--auth user:password`` or ``PLEURA_AUTH``); uploads
are limited in size, duration and type, and a refused upload gets a message, never a traceback.
Issue #29: a login served beyond loopback needs TLS (``--tls-cert`` / ``--tls-key``), since the
password would otherwise cross the network in clear text; ``--allow-plain-http`` accepts that
explicitly (and is logged as a warning at every start).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

AUTH_ENV = "PLEURA_AUTH"
"""Environment variable holding ``user:password`` (so the password is not in ``ps`` output)."""

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

DISCLAIMER = (
    "Research software, not for diagnosis. pleura is not a medical device: its scores are "
    "experimental and must not guide patient care."
)


class SafetyError(ValueError):
    """A refused configuration or upload; the message says what to do."""


@dataclass(frozen=True)
class UploadLimits:
    """Limits on a clip uploaded to the report page (or picked for the live page).

    Attributes:
        max_bytes: largest accepted file.
        max_seconds: longest accepted clip (by container duration, else frames / fps).
        max_frames: most frames scored in one report.
        extensions: accepted file name endings (lower case, with the dot).
    """

    max_bytes: int = 200 * 1024 * 1024
    max_seconds: float = 300.0
    max_frames: int = 3000
    extensions: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".mpeg", ".mpg", ".m4v",
                                   ".webm", ".gif", ".dcm")


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``"user:password"`` -> ``("user", "password")``; None or "" -> None.

    Raises:
        SafetyError: if the value has no ``:`` or an empty user or password.
    """
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SafetyError("authentication must be given as user:password (both non-empty), "
                          f"e.g. --auth alice:s3cret or {AUTH_ENV}=alice:s3cret")
    return user, password


def resolve_auth(cli_value: str | None, env: Mapping[str, str] | None = None,
                 ) -> tuple[str, str] | None:
    """The ``--auth`` value if given, else ``$PLEURA_AUTH``, parsed."""
    source: Mapping[str, str] = os.environ if env is None else env
    return parse_auth(cli_value or source.get(AUTH_ENV) or None)


def is_local_host(host: str) -> bool:
    """True for loopback addresses only (127.0.0.0/8, localhost, ::1)."""
    return host in LOCAL_HOSTS or host.startswith("127.")


def check_exposure(host: str, share: bool, auth: tuple[str, str] | None) -> None:
    """Refuse to serve beyond loopback (or through a share link) without authentication.

    Raises:
        SafetyError: naming the flag that needs ``--auth``.
    """
    if auth is not None:
        return
    if share:
        raise SafetyError(
            "refusing --share without authentication: a share link makes the page public. "
            f"Add --auth user:password (or set {AUTH_ENV}=user:password).")
    if not is_local_host(host):
        raise SafetyError(
            f"refusing to bind {host!r} without authentication: anyone on the network could "
            f"open the page. Add --auth user:password (or set {AUTH_ENV}=user:password), "
            "or bind 127.0.0.1.")


def check_transport(host: str, auth: tuple[str, str] | None, tls_cert: str | None,
                    tls_key: str | None, allow_plain_http: bool = False) -> None:
    """Refuse a login sent in clear text over the network; check the TLS files.

    Loopback and a page without login need no TLS (nothing secret crosses the network; a share
    link is HTTPS at its public end). Beyond loopback, ``--auth`` needs ``--tls-cert`` and
    ``--tls-key`` unless ``allow_plain_http`` says plain HTTP is accepted (then a warning is
    logged).

    Raises:
        SafetyError: one TLS file without the other, a certificate / key that does not load, or a
            login beyond loopback over plain HTTP without ``allow_plain_http``.
    """
    if (tls_cert is None) != (tls_key is None):
        raise SafetyError("TLS needs both --tls-cert FILE and --tls-key FILE (tls_cert and "
                          "tls_key in the [ui] section)")
    if tls_cert is not None and tls_key is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise SafetyError(f"cannot use the TLS certificate {tls_cert} with key {tls_key}: "
                              f"{getattr(exc, 'strerror', None) or exc} (both PEM files; the key "
                              "without a passphrase)") from None
        return
    if auth is None or is_local_host(host):
        return
    if not allow_plain_http:
        raise SafetyError(
            f"refusing to serve the login on {host!r} over plain HTTP: the password would cross "
            "the network in clear text. Give --tls-cert FILE --tls-key FILE (PEM), or bind "
            "127.0.0.1 behind an HTTPS proxy, or accept clear text with --allow-plain-http.")
    log.warning("SERVING THE LOGIN ON %s OVER PLAIN HTTP (--allow-plain-http): the password "
                "crosses the network in clear text", host)


def check_upload(path: str | Path | None, limits: UploadLimits = UploadLimits()) -> Path:
    """Check an uploaded clip's presence, type, size and duration before it is scored.

    The duration is read with PyAV (the runtime's decoder) from the container, so a file that
    is not a video is refused here too.

    Returns:
        The path, resolved.

    Raises:
        SafetyError: with a message fit to show on the page.
    """
    if path is None or str(path) == "":
        raise SafetyError("no clip given: upload a video file or pick a demo clip")
    p = Path(path)
    if not p.is_file():
        raise SafetyError(f"clip {p.name!r} was not found (upload it again)")
    ext = p.suffix.lower()
    if ext not in limits.extensions:
        raise SafetyError(f"{p.name!r}: file type {ext or '(none)'} is not accepted; "
                          f"use one of {', '.join(limits.extensions)}")
    size = p.stat().st_size
    if size > limits.max_bytes:
        raise SafetyError(f"{p.name!r} is {size / 1e6:.1f} MB; the limit is "
                          f"{limits.max_bytes / 1e6:.0f} MB")
    if size == 0:
        raise SafetyError(f"{p.name!r} is empty")
    seconds, frames = probe_clip(p)
    if seconds is not None and seconds > limits.max_seconds:
        raise SafetyError(f"{p.name!r} lasts {seconds:.0f} s; the limit is "
                          f"{limits.max_seconds:.0f} s (trim it first)")
    if frames is not None and frames > limits.max_frames:
        raise SafetyError(f"{p.name!r} has {frames} frames; the limit is {limits.max_frames}")
    return p.resolve()


def probe_clip(path: Path) -> tuple[float | None, int | None]:
    """(duration in seconds, frame count) of a clip from its container; None where unknown.

    Raises:
        SafetyError: if PyAV cannot open the file or it has no video stream.
    """
    import av  # the runtime's decoder; imported here so `ui.safety` stays light

    from stream.sources import dicom

    if dicom.is_dicom(path):  # a DICOM cine: its header says how long it is
        try:
            ds = dicom.read_header(path)
        except Exception as exc:  # SourceError: not a readable DICOM
            raise SafetyError(f"{path.name!r} could not be read as DICOM ({exc})") from None
        n = int(ds.get("NumberOfFrames", 1) or 1)
        return n / dicom.frame_rate(ds), n
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise SafetyError(f"{path.name!r} has no video stream")
            vs = c.streams.video[0]
            seconds = None
            if vs.duration is not None and vs.time_base is not None:
                seconds = float(vs.duration * vs.time_base)
            elif c.duration is not None:
                seconds = c.duration / 1e6
            frames = int(vs.frames) if vs.frames else None
            if frames is None and seconds is not None and vs.average_rate:
                frames = int(round(seconds * float(vs.average_rate)))
            return seconds, frames
    except SafetyError:
        raise
    except Exception as exc:  # any decoder error: the file is not a readable video
        raise SafetyError(f"{path.name!r} could not be read as a video "
                          f"({type(exc).__name__}); upload an mp4, avi, mov or gif") from None
