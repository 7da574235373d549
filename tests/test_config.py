"""One config (issue #16): per-stage dataclasses <-> TOML / JSON / flags, and the config that
reaches each real process (``pleura live --config``, ``pleura worker|capture|ui --config``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import pytest
import tomllib
import zmq

from engines.testing import make_dummy_bundle
from stream.cli import build_parser
from stream.config import (
    CaptureSettings,
    ConfigError,
    LiveSettings,
    PleuraConfig,
    Topology,
    UiSettings,
    WorkerConfig,
    WorkerSettings,
    at_least,
    option,
    option_fields,
)
from stream.configfile import dumps_toml, from_dict, load, read_file, to_dict, write
from stream.options import add_config_argument, add_flags, live_config, process_config
from stream.sockets import free_port
from stream.wire import Kind, Message, decode, encode

EXAMPLE = Path(__file__).resolve().parents[1] / "stream" / "pleura.example.toml"


def pleura(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream", *args]


def _args(*argv: str):
    return build_parser(list(argv)).parse_args(list(argv))


def _toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _odd() -> PleuraConfig:
    """A config far from the defaults: every kind of value, awkward strings."""
    return PleuraConfig(
        live=LiveSettings(sources=("a b.mp4", 'q"uote\\d.mov', "ünï ✓\x7f\t"), headless=True,
                          seconds=1e-3, transport="tcp"),
        capture=CaptureSettings(loop=False, speed=2.5, fps=12, roi="1,2,3,4", colour=True),
        worker=WorkerSettings(bundle="/b/ü", backend="onnxruntime", threads=3, seg="off",
                              seg_hz=0.25, mc_samples=4, max_streams=2, display_max=200),
        ui=UiSettings(host="0.0.0.0", port=9000, auth="u:p#[x]", share=True),
        topology=Topology(frames=("tcp://127.0.0.1:1",) * 3, results="tcp://0.0.0.0:2"))


def test_toml_and_json_round_trip(tmp_path):
    cfg = _odd()
    assert from_dict(PleuraConfig, tomllib.loads(dumps_toml(to_dict(cfg)))) == cfg
    assert from_dict(PleuraConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg
    for name in ("c.toml", "c.json"):
        assert load(write(to_dict(cfg), tmp_path / name)) == cfg
    assert (tmp_path / "c.toml").stat().st_mode & 0o077 == 0  # may hold a login
    # the defaults too, and a process config (what the supervisor hands a worker)
    assert load(write(to_dict(PleuraConfig()), tmp_path / "d.toml")) == PleuraConfig()
    w = WorkerConfig(frames_addrs=("ipc:///x",), results_addr="ipc:///y", seg_hz=7.0)
    assert from_dict(WorkerConfig, json.loads(json.dumps(to_dict(w)))) == w


@pytest.mark.parametrize("text, words", [
    ("[worker]\nseg_rate = 2\n", ["unknown key 'seg_rate'", "[worker]", "seg_hz", "threads"]),
    ("[wroker]\nseg = 'off'\n", ["unknown section 'wroker'", "worker", "capture", "topology"]),
    ("[live]\nsource = 'a.mp4'\n", ["unknown key 'source'", "sources"]),
    # a process's addresses belong to [topology] in a live file, not to [worker]
    ("[worker]\nresults_addr = 'tcp://x:1'\n", ["unknown key 'results_addr'", "display_max"]),
])
def test_unknown_key_names_it_and_the_valid_ones(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        load(_toml(tmp_path / "bad.toml", text))
    msg = str(err.value)
    assert all(w in msg for w in words), msg
    assert str(tmp_path / "bad.toml") in msg


@pytest.mark.parametrize("text, words", [
    ('[worker]\nseg_hz = "2"\n', ["worker.seg_hz must be a number", "str '2'"]),
    ("[worker]\nthreads = true\n", ["worker.threads must be an integer", "bool"]),
    ("[worker]\nthreads = 1.5\n", ["worker.threads must be an integer", "float"]),
    ("[live]\nsources = 'a.mp4'\n", ["live.sources must be a list of strings"]),
    ("[live]\nheadless = 1\n", ["live.headless must be true or false"]),
    ('[worker]\nseg = "fast"\n', ["seg must be one of auto, lane, inline, off", "'fast'"]),
    ("[worker]\nseg_hz = -1\n", ["[worker] seg_hz must be > 0, got -1.0"]),
    ("[ui]\nport = 70000\n", ["port must be a port number"]),
    ("worker = 3\n", ["worker must be a section"]),
    ("[worker\n", ["is not valid TOML"]),
])
def test_wrong_type_or_value_is_a_clear_error(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        load(_toml(tmp_path / "bad.toml", text))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_missing_or_odd_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_file(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match=r"must end in \.toml or \.json"):
        read_file(_toml(tmp_path / "c.yaml", "a: 1"))


def test_cli_flag_overrides_the_file(tmp_path):
    f = _toml(tmp_path / "p.toml", '[live]\nsources = ["a.mp4", "b.mp4"]\nheadless = true\n'
              '[worker]\nseg = "off"\nseg_hz = 3.0\nthreads = 2\n[capture]\nloop = true\n')
    cfg = live_config(_args("live", "--config", str(f), "--seg-hz", "5", "--no-loop",
                            "--source", "c.mp4", "--port", "8000"))
    assert cfg.worker.seg_hz == 5.0 and cfg.capture.loop is False  # flags win
    assert cfg.live.sources == ("c.mp4",)  # a flag replaces the file's list
    assert cfg.worker.seg == "off" and cfg.worker.threads == 2 and cfg.live.headless  # file
    assert cfg.ui.port == 8000 and cfg.worker.display_max == 640  # flag / default
    assert live_config(_args("live", "--config", str(f))).worker.seg_hz == 3.0
    # a bad flag value is refused by the parser with the same check as the file
    with pytest.raises(SystemExit):
        _args("live", "--seg-hz", "-2")
    # the single processes read their own section, flags on top
    w = process_config(WorkerConfig, _args("worker", "--config", str(f), "--frames", "ipc:///a",
                                           "--frames", "ipc:///b", "--results", "ipc:///r",
                                           "--seg", "lane"))
    assert (w.frames_addrs, w.seg, w.seg_hz, w.threads) == (("ipc:///a", "ipc:///b"), "lane",
                                                            3.0, 2)
    with pytest.raises(ConfigError, match="frames_addrs is not set: give --frames ADDR"):
        process_config(WorkerConfig, _args("worker", "--config", str(f)))


def test_print_config_is_a_config_file(tmp_path, capsys):
    from stream.cli_live import run

    f = _toml(tmp_path / "p.toml", '[worker]\nseg = "off"\n[topology]\nresults = "tcp://x:1"\n')
    assert run(_args("live", "--config", str(f), "--print-config", "--seg-hz", "4")) == 0
    cfg = from_dict(PleuraConfig, tomllib.loads(capsys.readouterr().out))
    assert (cfg.worker.seg, cfg.worker.seg_hz, cfg.topology.results) == ("off", 4.0, "tcp://x:1")


def test_a_new_worker_option_is_one_field():
    """Adding a worker option is one ``option(...)`` field: the flag, the file key, the check
    and the JSON hand-over to the process all follow from it (here on a subclass made in the
    test; :func:`test_live_config_file_reaches_the_processes` follows a real one, display_max,
    into real processes)."""

    @dataclass(frozen=True, kw_only=True)
    class Extended(WorkerConfig):
        gamma: int = option(1, "a new worker option", check=at_least(1))

    import argparse

    p = argparse.ArgumentParser()
    add_config_argument(p)
    add_flags(p, Extended)
    base = ["--frames", "ipc:///f", "--results", "ipc:///r"]
    assert process_config(Extended, p.parse_args([*base, "--gamma", "3"])).gamma == 3
    assert "--gamma" in p.format_help() and "a new worker option" in p.format_help()
    with pytest.raises(SystemExit):
        p.parse_args([*base, "--gamma", "0"])
    with pytest.raises(ConfigError, match="gamma must be >= 1"):
        from_dict(Extended, {"frames_addrs": [], "results_addr": "", "gamma": 0})
    cfg = from_dict(Extended, tomllib.loads('frames_addrs = []\nresults_addr = ""\ngamma = 7\n'))
    assert cfg.gamma == 7 and from_dict(Extended, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_example_file_documents_every_option():
    """``stream/pleura.example.toml`` loads, names every option of every section (set or
    commented out) and no key that does not exist."""
    assert load(EXAMPLE) is not None
    section, seen = None, {}
    for line in EXAMPLE.read_text().splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m[1]
        elif m := re.fullmatch(r"#? ?(\w+) = .*", line):
            seen.setdefault(section, set()).add(m[1])
    for f in fields(PleuraConfig):
        keys = {o.name for o in option_fields(type(getattr(PleuraConfig(), f.name)))}
        assert seen.get(f.name) == keys, (f.name, keys ^ seen.get(f.name, set()))


# --------------------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("config")
    frames = d / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(frames / f"{i:03d}.png"), rng.integers(0, 255, (180, 240), np.uint8))
    return {"dir": d, "frames": frames, "bundle": make_dummy_bundle(d / "bundle")}


def _display_sides(sub: zmq.Socket, timeout: float, proc: subprocess.Popen) -> set[int]:
    """Long sides of the display frames of the results that arrive on ``sub``."""
    sides, t_end = set(), time.time() + timeout
    while time.time() < t_end and proc.poll() is None:
        if sub.poll(200):
            m = decode(sub.recv())
            if m.kind == Kind.RESULT and not m.meta.get("status_only"):
                sides.add(max(m.meta["display_hw"]))
    return sides


def _sub(addr: str) -> zmq.Socket:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(addr)
    return sub


def test_live_config_file_reaches_the_processes(env, tmp_path):
    """``pleura live --config F --headless``: the sources, the worker's settings (display_max,
    seg), the topology (results on a fixed tcp port) and the statistics path come from F."""
    port = free_port()
    stats = tmp_path / "stats.json"
    f = _toml(tmp_path / "pleura.toml", f"""
[live]
sources = ["{env['frames']}"]
seconds = 60.0
stats_json = "{stats}"
[capture]
fps = 15.0
[worker]
bundle = "{env['bundle']}"
seg = "off"
display_max = 96
[topology]
results = "tcp://127.0.0.1:{port}"
""")
    sub = _sub(f"tcp://127.0.0.1:{port}")
    proc = subprocess.Popen(pleura("live", "--config", str(f), "--headless"),
                            stderr=subprocess.PIPE, text=True)
    try:
        sides = _display_sides(sub, 90.0, proc)
        assert proc.wait(60) == 0
    finally:
        sub.close(0)
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert sides == {96}, err[-2000:]  # 240 x 180 frames shown at 96 x 72
    summary = json.loads(stats.read_text())
    assert summary["config"]["worker"]["display_max"] == 96
    assert summary["frames"]["processed"] >= 1 and "Traceback" not in err


def test_worker_takes_its_option_from_the_file_and_the_flag(env, tmp_path):
    """``pleura worker --config F``: display_max from F's [worker]; ``--display-max`` wins."""
    a = {k: f"ipc://{tmp_path}/{k}.sock" for k in ("frames", "results")}
    f = _toml(tmp_path / "w.toml", f'[worker]\nbundle = "{env["bundle"]}"\nseg = "off"\n'
              f'display_max = 64\nframes_addrs = ["{a["frames"]}"]\n'
              f'results_addr = "{a["results"]}"\n')
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(a["frames"])
    img = np.full((180, 240), 90, np.uint8)
    try:
        for flags, want in (((), 64), (("--display-max", "120"), 120)):
            sub = _sub(a["results"])
            proc = subprocess.Popen(pleura("worker", "--config", str(f), *flags),
                                    stderr=subprocess.PIPE, text=True)
            try:
                sides, seq, t_end = set(), 0, time.time() + 90
                while not sides and time.time() < t_end and proc.poll() is None:
                    m = Message(Kind.FRAME, 0, seq, meta={"source": "t", "session": 1,
                                                          "epoch": 0}, array=img)
                    m.stamp("grabbed", time.time())
                    m.stamp("sent", time.time())
                    pub.send(encode(m))
                    seq += 1
                    sides = _display_sides(sub, 0.3, proc)
                assert sides == {want}, proc.stderr.read() if proc.poll() is not None else ""
            finally:
                sub.close(0)
                proc.terminate()
                proc.wait(20)
    finally:
        pub.close(0)


def test_capture_and_ui_read_their_section(tmp_path):
    """``pleura capture|ui --config F`` read ``[capture]`` / ``[ui]`` (checked before any
    socket or page: the error names what came from the file)."""
    f = _toml(tmp_path / "c.toml", f'[capture]\nsource = "{tmp_path}/missing.mp4"\n'
              f'frames_addr = "ipc://{tmp_path}/f.sock"\n[ui]\nresults_addr = "tcp://x:1"\n'
              'host = "0.0.0.0"\n')
    cap = subprocess.run(pleura("capture", "--config", str(f)), capture_output=True, text=True,
                         timeout=60)
    assert cap.returncode == 2 and "missing.mp4" in cap.stderr, cap.stderr[-2000:]
    ui = subprocess.run(pleura("ui", "--config", str(f)), capture_output=True, text=True,
                        timeout=60, env={**os.environ, "PLEURA_AUTH": ""})
    assert ui.returncode == 2 and "0.0.0.0" in ui.stderr, ui.stderr[-2000:]
    bad = subprocess.run(pleura("worker", "--config", str(f)), capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "frames_addrs is not set" in bad.stderr, bad.stderr[-2000:]
