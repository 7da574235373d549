"""Which model bundle the page uses, and which it offers (the Live tab's bundle menu).

The menu lists the bundles shipped in ``engines/bundles/`` and the ``--bundle`` the page was
started with, each with what its manifest says about real scans (``for_real_scans``,
:func:`engines.bundle.real_scans_of`): "simulator only — fails on real scans" beside the three
simulator-trained bundles. The live page says it again beside the scores
(:func:`bundle_scans`, sent with every frame).

Choosing one sends ``{"cmd": "bundle", "path": ...}``: the supervisor of ``pleura live``
checks it against the same list, loads it once to verify it, and restarts the worker (and its
standby) on it; the running video score starts again. The report and exam
tabs score with the chosen bundle too, so the page never mixes two models.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from engines.bundle import SIM_ONLY_NOTE, default_bundle_path, real_scans_of, shipped_bundles

REAL_WORDS = {True: "for real scans", False: SIM_ONLY_NOTE, None: "real scans: not stated"}
"""What the menu says after each bundle, by its manifest's ``for_real_scans``."""


def _manifest(path: Path) -> dict:
    try:
        m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) else {}


def bundle_label(path: Path) -> str:
    """``"cnn-sord [simulator only — fails on real scans]"``: folder name, the frame model it
    was trained as (up to its first ':'), and whether it is meant for real scans."""
    manifest = _manifest(path)
    training = manifest.get("training")
    model = str((training if isinstance(training, dict) else {}).get("frame_model") or "")
    model = model.split(":", 1)[0].strip()
    real, _note = real_scans_of(manifest)
    name = f"{path.name} · {model}" if model and model != path.name else path.name
    return f"{name} [{REAL_WORDS[real]}]"


def bundle_scans(given: str | None) -> dict[str, dict]:
    """{bundle name (manifest ``name``): {"real": True | False | None, "note": str}} of the
    bundles the page offers, for the live page's warning beside the scores. A name two offered
    bundles share with different answers is left out (the page then claims nothing)."""
    out: dict[str, dict] = {}
    clash: set[str] = set()
    for path in bundle_options(given).values():
        manifest = _manifest(path)
        name = str(manifest.get("name") or path.name)
        real, note = real_scans_of(manifest)
        fact = {"real": real, "note": note}
        if name in out and out[name] != fact:
            clash.add(name)
        out.setdefault(name, fact)
    return {k: v for k, v in out.items() if k not in clash}


def bundle_options(given: str | None) -> dict[str, Path]:
    """{label: folder} of the bundles the page offers: the shipped ones, then ``given``."""
    paths = [p.resolve() for p in shipped_bundles()]
    if given:
        g = Path(given).resolve()
        if g not in paths:
            paths.append(g)
    out: dict[str, Path] = {}
    for p in paths:
        label = bundle_label(p)
        if label in out:  # two folders of the same name: tell them apart by path
            label = f"{label} ({p})"
        out[label] = p
    return out


class BundleChoice:
    """The page's current bundle (thread-safe) and the listeners told when it changes.

    Args:
        given: the ``--bundle`` the page was started with (None: the shipped default).
    """

    def __init__(self, given: str | None) -> None:
        self.options = bundle_options(given)
        start = Path(given).resolve() if given else default_bundle_path().resolve()
        self._path: Path = start
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Path], None]] = []

    @property
    def path(self) -> Path:
        with self._lock:
            return self._path

    def label(self) -> str | None:
        """The menu label of the current bundle (None if it is not offered)."""
        cur = self.path
        return next((k for k, v in self.options.items() if v == cur), None)

    def on_change(self, fn: Callable[[Path], None]) -> None:
        self._listeners.append(fn)

    def choose(self, label: str) -> Path:
        """Make ``label`` current and tell the listeners.

        Raises:
            ValueError: ``label`` is not one of :attr:`options` (naming them).
        """
        if label not in self.options:
            raise ValueError(f"unknown bundle {label!r}; choose one of "
                             f"{', '.join(self.options) or 'none'}")
        path = self.options[label]
        with self._lock:
            self._path = path
        for fn in self._listeners:
            fn(path)
        return path
