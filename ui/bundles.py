"""Which model bundle the page uses, and which it offers (the Live tab's bundle menu).

The menu lists the bundles shipped in ``engines/bundles/`` and the ``--bundle`` the page was
started with. Choosing one sends ``{"cmd": "bundle", "path": ...}``: the supervisor of
``pleura live`` checks it against the same list, loads it once to verify it, and restarts the
worker (and its standby) on it; the running video score starts again. The report and exam
tabs score with the chosen bundle too, so the page never mixes two models.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from engines.bundle import default_bundle_path, shipped_bundles


def bundle_label(path: Path) -> str:
    """``"cnn-sord · cnn-sord"``: folder name and the frame model it was trained as."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        model = str((manifest.get("training") or {}).get("frame_model") or "")
    except (OSError, ValueError, AttributeError):
        model = ""
    return f"{path.name} · {model}" if model and model != path.name else path.name


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
