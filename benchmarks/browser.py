"""Measure the live page in a real headless Chromium: displayed fps and display latency.

    python -m benchmarks.browser --seconds 30 [--bundle DIR] [--source CLIP] [--json OUT]

Starts ``pleura live`` (supervisor, capture, worker and UI processes over loopback tcp) on a
clip, opens the page in headless Chromium (selenium + Debian's chromium/chromedriver, never a
downloaded browser), waits for the first score, then lets the page's own script
(``ui/assets/live.js``) count what it paints for ``--seconds``:

- displayed fps: frames painted per second (each a new result: the page never redraws one);
- end-to-end latency: paint time minus the capture timestamp ("grabbed") of the frame;
- display latency: paint time minus the time the UI process received the result.

All clocks are this machine's ``time.time()`` / ``Date.now()`` (loopback, one host). The
helpers here are shared with ``tests/test_ui_browser.py``. selenium is a [test] dependency and
is imported only when used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from stream.sockets import free_port

REPO = Path(__file__).resolve().parents[1]
CHROME_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               "--window-size=1400,1100")


def chromium_paths() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) executables on PATH, or None each."""
    return (shutil.which("chromium") or shutil.which("chromium-browser"),
            shutil.which("chromedriver"))


def make_clip(path: Path, n: int = 90, fps: int = 30) -> Path:
    """A small convex-probe-like clip with a moving bright line (when no demo clip exists)."""
    import av
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for i in range(n):
            img: np.ndarray = np.zeros((240, 320), np.uint8)
            cv2.ellipse(img, (160, 0), (220, 220), 0, 40, 140, 90, -1)
            img = cv2.add(img, (rng.random((240, 320)) * 50).astype(np.uint8))
            y = 50 + (i * 3) % 120
            cv2.line(img, (70, y), (250, y), 255, 3)
            rgb = np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_GRAY2RGB), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def demo_or_clip(tmp: Path) -> Path:
    """``stream/demo/demo-convex.mp4`` if present, else a generated clip in ``tmp``."""
    demo = REPO / "stream" / "demo" / "demo-convex.mp4"
    return demo if demo.exists() else make_clip(tmp / "demo-convex.mp4")


def pick_bundle(tmp: Path) -> str:
    """``$PLEURA_UI_TEST_BUNDLE``, else the shipped default bundle if it loads, else a dummy."""
    import engines

    want = os.environ.get("PLEURA_UI_TEST_BUNDLE")
    if want:
        return want
    try:
        return str(engines.load_bundle(engines.default_bundle_path()).path)
    except Exception:
        from engines.testing import make_dummy_bundle

        return str(make_dummy_bundle(tmp / "bundle"))


class LivePipeline:
    """``pleura live`` as a child process group on a free port; a context manager."""

    def __init__(self, source: Path, bundle: str, log_path: Path, port: int | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "live", "--source", str(source), "--loop",
             "--bundle", bundle, "--port", str(self.port), "--transport", "tcp", *extra],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False"})

    def wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pleura live exited early with code {self.proc.returncode}"
                                   f" (log: {self.log_path})")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url, timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the page did not come up at {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        # SIGTERM to the supervisor's own process group (it was started in a new session).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> LivePipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def chromium():
    """A headless Chromium driven by selenium, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths()
    if binary is None or driver_path is None:
        raise RuntimeError("chromium and chromedriver are needed (apt install chromium "
                           "chromium-driver)")
    opts = webdriver.ChromeOptions()
    for a in CHROME_ARGS:
        opts.add_argument(a)
    profile = tempfile.mkdtemp(prefix="pleura-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.binary_location = binary
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(fn, timeout: float, what: str, step: float = 0.2):
    """Poll ``fn`` until it returns something truthy; raise naming ``what`` on timeout."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # the element is not there yet
            last = exc
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def first_score(driver, timeout: float = 45.0) -> str:
    from selenium.webdriver.common.by import By

    def score():
        t = driver.find_element(By.ID, "pleura-frame-score").text.strip()
        return t if t.isdigit() else None

    return wait_for(score, timeout, "a frame score on the page")


def received(url: str) -> int:
    with urllib.request.urlopen(url + "pleura/state.json", timeout=5) as r:
        return int(json.loads(r.read())["received"])


def measure(driver, url: str, seconds: float, warmup: float = 3.0) -> dict:
    """Reset the page's counters after ``warmup`` s, wait ``seconds``, return the summary."""
    time.sleep(warmup)
    driver.execute_script("window.pleuraStats.reset()")
    r0, t0 = received(url), time.time()
    time.sleep(seconds)
    summary = driver.execute_script("return window.pleuraStats.summary()")
    summary["ui_results_per_s"] = (received(url) - r0) / (time.time() - t0)
    return summary


GRADIO_PROBE_JS = """
window.pleuraStats = {drawn: 0, latency: [], display: [], t0: performance.now()};
const S = window.pleuraStats;
let lastSrc = null;
function tick() {
  const img = document.querySelector('#gr-live img');
  const ts = document.querySelector('#gr-ts textarea');
  if (img && ts && img.src !== lastSrc && img.complete && img.naturalWidth > 0) {
    lastSrc = img.src;
    try {
      const t = JSON.parse(ts.value), now = Date.now() / 1000;
      S.drawn++; S.latency.push(1000 * (now - t.tg)); S.display.push(1000 * (now - t.tr));
    } catch (e) {}
  }
  requestAnimationFrame(tick);
}
requestAnimationFrame(tick);
S.reset = () => { S.drawn = 0; S.latency = []; S.display = []; S.t0 = performance.now(); };
S.summary = () => {
  const pct = (a, q) => { const s = a.slice().sort((x, y) => x - y);
    return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : null; };
  const sec = (performance.now() - S.t0) / 1000;
  return {drawn: S.drawn, seconds: sec, mean_fps: S.drawn / sec,
          latency_p50_ms: pct(S.latency, 0.5), latency_p95_ms: pct(S.latency, 0.95),
          display_p50_ms: pct(S.display, 0.5), display_p95_ms: pct(S.display, 0.95)};
};
"""


def gradio_transport_page(results_addr: str, port: int):
    """The alternative this module compares against: a generator streaming ``gr.Image``.

    Same results, same overlays, but every frame goes through Gradio's own event stream (the
    image saved to Gradio's cache and fetched by the page). Returns the running Blocks.
    """
    import gradio as gr

    from ui import overlay
    from ui.result_feed import ResultStore, ResultSubscriber

    store = ResultStore()
    ResultSubscriber(results_addr, store).start()

    def frames():
        n = 0
        while True:
            r = store.wait_newer(n, 1.0)
            if r is None:
                continue
            n = r.n
            rgb = overlay.render_result(r.frame, r.meta, show_text=False, mask=r.mask,
                                        unc=r.unc)
            yield rgb, json.dumps({"tg": r.t_grabbed, "tr": r.t_received, "n": n})

    with gr.Blocks() as blocks:
        img = gr.Image(format="jpeg", elem_id="gr-live", interactive=False)
        ts = gr.Textbox(elem_id="gr-ts")
        blocks.load(frames, None, [img, ts])
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                  quiet=True, ssr_mode=False)
    return blocks


def measure_gradio_transport(live: LivePipeline, seconds: float) -> dict:
    """Display fps / latency of :func:`gradio_transport_page` on the same pipeline."""
    import re

    m = re.search(r"results from (\S+),", live.log_path.read_text())
    if m is None:
        raise RuntimeError(f"no results address in {live.log_path}")
    port = free_port()
    blocks = gradio_transport_page(m.group(1), port)
    try:
        with chromium() as d:
            d.get(f"http://127.0.0.1:{port}/")
            d.execute_script(GRADIO_PROBE_JS)
            wait_for(lambda: d.execute_script("return window.pleuraStats.drawn") > 0, 45,
                     "the first frame through gr.Image")
            time.sleep(3.0)
            d.execute_script("window.pleuraStats.reset()")
            time.sleep(seconds)
            return d.execute_script("return window.pleuraStats.summary()")
    finally:
        blocks.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--bundle", default=None, help="default: as tests/test_ui_browser.py")
    p.add_argument("--source", type=Path, default=None, help="default: the demo clip")
    p.add_argument("--speed", type=float, default=1.0,
                   help="playback speed of the clip (the demo clip is 20 fps; 1.5 -> 30 fps)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--compare-gradio", action="store_true",
                   help="also measure the same results streamed through gr.Image (Gradio's "
                   "own transport) for comparison")
    p.add_argument("--screenshot", type=Path, default=None,
                   help="save a screenshot of the page at the end (PNG)")
    p.add_argument("--no-mask", action="store_true",
                   help="untick the segmentation-mask overlay (e.g. for a dummy bundle)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pleura-ui-bench-"))
    source = args.source or demo_or_clip(tmp)
    bundle = args.bundle or pick_bundle(tmp)
    with LivePipeline(source, bundle, tmp / "live.log",
                      extra=("--speed", str(args.speed))) as live:
        live.wait_ready(120)
        with chromium() as d:
            d.get(live.url)
            first_score(d)
            if args.no_mask:
                d.execute_script("document.getElementById('pleura-mask').checked = false")
            out = measure(d, live.url, args.seconds)
            if args.screenshot:
                d.save_screenshot(str(args.screenshot))
        if args.compare_gradio:
            out["gradio_transport"] = measure_gradio_transport(live, args.seconds)
    out.update({"source": str(source), "speed": args.speed, "bundle": bundle,
                "mask": not args.no_mask,
                "load_avg": os.getloadavg(),
                "cpus": os.cpu_count(),
                "command": "python -m benchmarks.browser " + " ".join(argv or sys.argv[1:])})
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
