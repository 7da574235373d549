"""The model bundle: a directory that ``train/`` writes and the runtime loads.

Layout (``../shared/DESIGN.md``)::

    BUNDLE/
      manifest.json      schema, inputs, class names, output meanings, sha256 of every file,
                         training data + exact commands, evaluation figures
      frame.onnx         Reg-STN: frames (B, 3, 224, 224) -> probs (B, 4), theta1, theta2 (B, 2, 3)
      frame-int8.onnx    optional: static int8 (QDQ) quantisation of frame.onnx
      seg-<name>.onnx    optional segmentation members: (B, 1, 200, 260) -> probs (B, 5, 200, 260)
      seg-<name>-mc.onnx optional dropout-on variant of a member (MC-dropout sampling)
      aggregator.json    uninorm neutral elements {"e": [4 floats]}
      plans/             TensorRT plans built on the target GPU (not hashed: machine-specific)

:func:`load_bundle` verifies the schema and the sha256 of every file the manifest lists, so a
missing, truncated or altered file is refused at load, never later in the stream. Every file
name in the manifest must stay inside the bundle folder: a relative path without ``..``, no
absolute path, and no symlink that resolves outside the folder; anything else is refused with a
:class:`BundleError` naming the entry.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.preprocess import FRAME_SPEC, SEG_SPEC, PreprocessSpec

SCHEMA = "pleura-bundle"
SCHEMA_VERSION = 1

CLASS_NAMES = ("score 0", "score 1", "score 2", "score 3")
"""Frame/video classes, the Soldati et al. 2020 LUS score (PAPER.md)."""
SEG_CLASS_NAMES = ("background", "score 0", "score 1", "score 2", "score 3")
"""Segmentation classes; label map value 0 = background, s + 1 = score s."""

OPSET = 17
"""ONNX opset of every model in a bundle (``pleura export`` and the test bundles)."""

FRAME_OUTPUTS = {
    "probs": "(B, 4) float32 softmax over scores 0..3, prediction of crop 1 (Roy et al. 2020)",
    "theta1": "(B, 2, 3) float32 affine transform of crop 1, affine_grid convention "
              "(output grid [-1, 1] -> input coords [-1, 1], align_corners=False)",
    "theta2": "(B, 2, 3) float32 affine transform of crop 2, same convention",
}
SEG_OUTPUTS = {
    "probs": "(B, 5, H, W) float32 softmax over {background, score 0..3}",
}

SIM_ONLY_NOTE = "simulator only — fails on real scans"
"""What the page says beside a bundle that is not for real scans (manifest ``for_real_scans``)."""

_REEXPORT_HINT = (
    "re-create the bundle with `pleura export RUN --out {path}` (or re-download/re-install "
    "the bundle that shipped with pleura)"
)


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class SegMember:
    """One segmentation member of the ensemble.

    Attributes:
        name: member name, e.g. ``"unet"``.
        file: path of the deterministic model (dropout off).
        mc_file: path of the dropout-on variant for MC sampling, or None.
    """

    name: str
    file: Path
    mc_file: Path | None = None


@dataclass(frozen=True)
class Bundle:
    """A verified bundle. Build it with :func:`load_bundle`, never by hand.

    Attributes:
        path: bundle directory.
        manifest: the parsed ``manifest.json``.
        frame_spec: preprocessing of the frame model's input.
        seg_spec: preprocessing of the segmentation members' input (None if no member).
        class_names: frame classes, 4 entries.
        seg_class_names: segmentation classes, 5 entries.
        frame_file: fp32 frame model (``frame.onnx``).
        frame_int8_file: int8 frame model, or None.
        cpu_frame_file: the frame model the CPU backend runs by default (the int8 one only
            when the export decided it costs <= 1 F1 point; manifest ``models.frame.cpu_default``).
        seg_members: segmentation members (may be empty).
        uninorm_e: (4,) neutral elements of the uninorm video aggregator, or None.
    """

    path: Path
    manifest: dict[str, Any]
    frame_spec: PreprocessSpec
    seg_spec: PreprocessSpec | None
    class_names: tuple[str, ...]
    seg_class_names: tuple[str, ...]
    frame_file: Path
    frame_int8_file: Path | None
    cpu_frame_file: Path
    seg_members: tuple[SegMember, ...] = ()
    uninorm_e: tuple[float, ...] | None = None
    files: dict[str, str] = field(default_factory=dict)  # relative name -> sha256

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @property
    def finding_names(self) -> tuple[str, ...]:
        """Names of the frame model's ``findings`` output, () when it has no findings head."""
        names = (self.manifest.get("models", {}).get("frame", {}) or {}).get("finding_names")
        return tuple(str(n) for n in names) if isinstance(names, list) else ()

    @property
    def crops_localise(self) -> bool:
        """Whether the Reg-STN crops localise the findings (issue #18).

        False only when the manifest says so (``models.frame.localises: false``, written
        when the crops were measured not to move with the content); the page then hides the
        crop boxes by default. Whole-frame models (θ = identity) are recognised from their
        outputs, not from here.
        """
        return self._frame_entry().get("localises") is not False

    @property
    def localisation_note(self) -> str:
        """Why the crops are not drawn by default (manifest ``models.frame.localisation_note``);
        a generic sentence when the manifest marks them as not localising without one."""
        note = self._frame_entry().get("localisation_note")
        if isinstance(note, str) and note.strip():
            return note.strip()
        return ("" if self.crops_localise else "this bundle's crops were measured not to "
                "localise the findings; they are hidden by default")

    @property
    def masks_shown(self) -> tuple[bool, str]:
        """Whether the page draws the segmentation mask by default, and why not.

        Manifest ``models.seg_display: {"show": false, "note": "..."}`` marks members whose
        masks are not meaningful on the images the bundle is meant for (e.g. a member trained
        on simulated data inside a real-scan bundle). Default: shown, no note.
        """
        d = (self.manifest.get("models") or {}).get("seg_display")
        if not isinstance(d, dict) or d.get("show") is not False:
            return True, ""
        note = d.get("note")
        return False, (note.strip() if isinstance(note, str) and note.strip() else
                       "this bundle's segmentation masks are hidden by default")

    @property
    def real_scans(self) -> tuple[bool | None, str]:
        """Whether the bundle is meant for real scans, and a short note saying so
        (:func:`real_scans_of` on the manifest)."""
        return real_scans_of(self.manifest)

    def _frame_entry(self) -> dict[str, Any]:
        entry = (self.manifest.get("models") or {}).get("frame")
        return entry if isinstance(entry, dict) else {}

    def has_segmentation(self) -> bool:
        return bool(self.seg_members)


def real_scans_of(manifest: Mapping[str, Any]) -> tuple[bool | None, str]:
    """Whether a bundle is meant for real scans (manifest ``for_real_scans``: true / false,
    with an optional ``real_scans_note``), and a short note for the page.

    A manifest written before the field existed gets it inferred from its training record:
    a frame model trained by ``pleura train real`` (``training.frame_model`` says so,
    ``training.real_clips`` is there, or the bundle ships ``frame-weights.npz``) is for real
    scans; one whose training data all came from the simulator (``simulator_version`` in its
    ``training.*_data``) is not; anything else is unknown (None: "not stated").

    Returns:
        (True | False | None, note); the note is ``SIM_ONLY_NOTE`` (or the manifest's own) for
        False, "trained on real scans" for True, "not stated" for None.
    """
    stated = manifest.get("for_real_scans")
    own = manifest.get("real_scans_note")
    own = own.strip() if isinstance(own, str) and own.strip() else ""
    if isinstance(stated, bool):
        value: bool | None = stated
    else:
        value = _infer_real_scans(manifest)
    if value is None:
        return None, own or "for real scans: not stated in the bundle's manifest"
    return value, own or ("trained on real scans" if value else SIM_ONLY_NOTE)


def _infer_real_scans(manifest: Mapping[str, Any]) -> bool | None:
    training = manifest.get("training")
    training = training if isinstance(training, dict) else {}
    files = manifest.get("files")
    real = ("pleura train real" in str(training.get("frame_model", ""))
            or "real_clips" in training
            or (isinstance(files, dict) and "frame-weights.npz" in files))
    if real:
        return True
    data = [v for k, v in training.items() if k.endswith("_data") and isinstance(v, dict)]
    if data and all("simulator_version" in d for d in data):
        return False
    return None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def default_bundle_path() -> Path:
    """The bundle shipped inside the package: ``engines/bundles/default/``."""
    return Path(__file__).resolve().parent / "bundles" / "default"


def shipped_bundles() -> list[Path]:
    """The bundles shipped inside the package: every folder of ``engines/bundles/`` with a
    ``manifest.json`` (not verified here; :func:`load_bundle` does that), sorted by name."""
    root = default_bundle_path().parent
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())


def _err(path: Path, what: str) -> BundleError:
    return BundleError(f"{what}; {_REEXPORT_HINT.format(path=path)}")


def _read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / "manifest.json"
    if not path.is_dir():
        raise BundleError(f"bundle {path} is not a directory; pass a folder written by "
                          f"`pleura export RUN --out DIR` (or omit --bundle for the default)")
    if not mpath.is_file():
        raise _err(path, f"bundle {path}: manifest.json is missing")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _err(path, f"bundle {path}: manifest.json is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise _err(path, f"bundle {path}: manifest.json must hold a JSON object")
    if manifest.get("schema") != SCHEMA or manifest.get("schema_version") != SCHEMA_VERSION:
        raise _err(path, f"bundle {path}: manifest.json has schema "
                         f"{manifest.get('schema')!r} version {manifest.get('schema_version')!r}, "
                         f"this pleura reads {SCHEMA!r} version {SCHEMA_VERSION}")
    return manifest


def bundle_file(path: Path, name: Any) -> Path:
    """``path / name`` for a file name taken from a manifest, confined to the bundle folder.

    Args:
        path: the bundle folder, resolved.
        name: the manifest entry.

    Raises:
        BundleError: ``name`` is not a plain relative path inside the folder (absolute, has a
            ``..`` part, or is a symlink that resolves outside it).
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise BundleError(f"bundle {path}: manifest.json names a file {name!r:.80}; file names "
                          f"must be non-empty strings")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or name.startswith("~"):
        raise BundleError(f"bundle {path}: manifest.json entry {name!r:.200} points outside the "
                          f"bundle folder; bundle files must be named relative to the folder, "
                          f"without '..' (copy the file into the bundle and re-export)")
    f = path / rel
    try:
        inside = f.resolve().is_relative_to(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise BundleError(f"bundle {path}: file {name!r:.200} is a link to a file outside the "
                          f"bundle folder; replace the link by the file itself")
    return f


def verify_files(path: Path, manifest: Mapping[str, Any]) -> dict[str, str]:
    """Check every file the manifest lists: inside the folder, present, same size, same sha256.

    Returns:
        {relative name: sha256}.

    Raises:
        BundleError: naming the first bad file and what to do.
    """
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise _err(path, f"bundle {path}: manifest.json lists no files")
    out = {}
    for name, meta in files.items():
        f = bundle_file(path, name)
        if not isinstance(meta, dict):
            raise _err(path, f"bundle {path}: manifest.json files[{name!r}] must be an object "
                             f'{{"sha256": ..., "bytes": ...}}')
        if not f.is_file():
            raise _err(path, f"bundle {path}: file {name} is missing")
        size = f.stat().st_size
        want_size = meta.get("bytes")
        if want_size is not None and not isinstance(want_size, int):
            raise _err(path, f"bundle {path}: manifest.json files[{name!r}].bytes must be an "
                             f"integer, got {want_size!r:.40}")
        if want_size is not None and size != int(want_size):
            kind = "truncated" if size < int(want_size) else "larger than recorded"
            raise _err(path, f"bundle {path}: file {name} is {kind} "
                             f"({size} bytes, manifest says {want_size})")
        digest = sha256_file(f)
        if digest != meta.get("sha256"):
            raise _err(path, f"bundle {path}: file {name} was altered or corrupted "
                             f"(sha256 {digest[:12]}…, manifest says "
                             f"{str(meta.get('sha256'))[:12]}…)")
        out[name] = digest
    return out


def _listed(path: Path, files: Mapping[str, str], name: str | None, field_name: str) -> Path:
    if not name:
        raise _err(path, f"bundle {path}: manifest.json has no {field_name}")
    if not isinstance(name, str) or name not in files:
        raise _err(path, f"bundle {path}: {field_name} {str(name)[:200]} is not listed (hashed) "
                         f"under files in manifest.json")
    return bundle_file(path, name)


def load_bundle(path: str | Path | Bundle) -> Bundle:
    """Load and verify a bundle directory.

    Args:
        path: the bundle folder (or an already loaded :class:`Bundle`, returned as is).

    Raises:
        BundleError: missing/invalid manifest, another schema, or a missing, truncated or
            altered file; the message names the file and says how to fix it.
    """
    if isinstance(path, Bundle):
        return path
    path = Path(path).expanduser().resolve()
    manifest = _read_manifest(path)
    files = verify_files(path, manifest)
    try:
        return _build(path, manifest, files)
    except (AttributeError, TypeError) as exc:  # e.g. a list where an object belongs
        raise _err(path, f"bundle {path}: manifest.json does not have the bundle structure "
                         f"({type(exc).__name__}: {exc})") from None


def _build(path: Path, manifest: dict[str, Any], files: dict[str, str]) -> Bundle:
    models = manifest.get("models") or {}
    fm = models.get("frame") or {}
    frame_file = _listed(path, files, fm.get("file"), "models.frame.file")
    int8 = fm.get("int8_file")
    frame_int8 = _listed(path, files, int8, "models.frame.int8_file") if int8 else None
    cpu_default = fm.get("cpu_default", fm.get("file"))
    cpu_file = _listed(path, files, cpu_default, "models.frame.cpu_default")
    members = []
    for m in models.get("seg") or []:
        mc = m.get("mc_file")
        members.append(SegMember(
            name=str(m.get("name", m.get("file"))),
            file=_listed(path, files, m.get("file"), "models.seg[].file"),
            mc_file=_listed(path, files, mc, "models.seg[].mc_file") if mc else None))
    inputs = manifest.get("inputs") or {}
    try:
        frame_spec = PreprocessSpec.from_dict(inputs["frame"])
        seg_spec = PreprocessSpec.from_dict(inputs["seg"]) if members else None
    except (KeyError, TypeError, ValueError) as exc:
        raise _err(path, f"bundle {path}: manifest.json inputs are invalid ({exc!r})") from None
    e = None
    agg = manifest.get("aggregator")
    if agg:
        agg_file = _listed(path, files, agg.get("file"), "aggregator.file")
        try:
            e = tuple(float(v) for v in json.loads(agg_file.read_text())["e"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _err(path, f"bundle {path}: {agg_file.name} must hold "
                             f'{{"e": [4 floats]}} ({exc!r})') from None
        if len(e) != 4 or not all(0.0 <= v <= 1.0 for v in e):
            raise _err(path, f"bundle {path}: {agg_file.name}: e must be 4 values in [0, 1], "
                             f"got {e}")
    return Bundle(path=path, manifest=manifest, frame_spec=frame_spec, seg_spec=seg_spec,
                  class_names=tuple(manifest.get("class_names", CLASS_NAMES)),
                  seg_class_names=tuple(manifest.get("seg_class_names", SEG_CLASS_NAMES)),
                  frame_file=frame_file, frame_int8_file=frame_int8, cpu_frame_file=cpu_file,
                  seg_members=tuple(members), uninorm_e=e, files=files)


def _frame_outputs(finding_names: Iterable[str]) -> dict[str, str]:
    names = list(finding_names)
    if not names:
        return dict(FRAME_OUTPUTS)
    return {**FRAME_OUTPUTS, "findings": f"(B, {len(names)}) float32 sigmoid probability of "
            f"each finding ({', '.join(names)}), from the whole frame"}


def write_aggregator(path: str | Path, e: Iterable[float]) -> Path:
    """Write ``aggregator.json`` ({"e": [4 floats]}) into a bundle folder."""
    e = [float(v) for v in e]
    if len(e) != 4:
        raise ValueError(f"uninorm e must have 4 values (one per class), got {len(e)}")
    out = Path(path) / "aggregator.json"
    out.write_text(json.dumps({"kind": "uninorm", "e": e}, indent=2) + "\n")
    return out


def write_manifest(path: str | Path, *, frame_file: str = "frame.onnx",
                   frame_int8_file: str | None = None, cpu_default: str | None = None,
                   seg_members: Iterable[Mapping[str, Any]] = (),
                   aggregator_file: str | None = None,
                   frame_spec: PreprocessSpec = FRAME_SPEC,
                   seg_spec: PreprocessSpec = SEG_SPEC,
                   training: Mapping[str, Any] | None = None,
                   commands: Iterable[str] = (),
                   evaluation: Mapping[str, Any] | None = None,
                   created_by: str = "pleura", name: str | None = None,
                   extra: Mapping[str, Any] | None = None,
                   extra_files: Iterable[str] = (),
                   finding_names: Iterable[str] = (),
                   seg_display: Mapping[str, Any] | None = None,
                   for_real_scans: bool | None = None) -> dict[str, Any]:
    """Write ``manifest.json`` for the model files already in ``path``; hashes every file.

    Args:
        path: bundle folder holding the files.
        frame_file, frame_int8_file: frame models (relative names).
        cpu_default: which frame model the CPU backend runs (defaults to ``frame_file``).
        seg_members: dicts ``{"name", "file", "mc_file"?, "arch"?}``.
        aggregator_file: ``aggregator.json`` or None.
        training: training data, licences, runs.
        commands: the exact commands that made the bundle.
        evaluation: evaluation figures.
        extra_files: other files to hash (e.g. ``MODEL_CARD.md``).
        finding_names: names of the frame model's ``findings`` output (its 4th output,
            (B, F) sigmoid probabilities), or empty when it has none.
        seg_display: ``{"show": False, "note": ...}`` to hide the masks by default
            (:attr:`Bundle.masks_shown`).
        for_real_scans: whether the bundle is meant for real scans; None infers it from
            ``training`` (:func:`real_scans_of`: a ``pleura train real`` run is, a run on
            simulated data only is not) and writes it when that is known.

    Returns:
        The manifest dict that was written.

    Long because its keyword signature and Args list every manifest field; the body builds
    one dict in the order the file reads.
    """
    path = Path(path)
    seg_members = [dict(m) for m in seg_members]
    listed = [frame_file, *([frame_int8_file] if frame_int8_file else [])]
    for m in seg_members:
        listed += [m["file"], *([m["mc_file"]] if m.get("mc_file") else [])]
    if aggregator_file:
        listed.append(aggregator_file)
    listed += list(extra_files)
    files = {}
    for n in listed:
        f = path / n
        if not f.is_file():
            raise FileNotFoundError(f"write_manifest: {f} does not exist")
        files[n] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    inputs: dict[str, Any] = {"frame": frame_spec.to_dict()}
    if seg_members:
        inputs["seg"] = seg_spec.to_dict()
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name or path.name,
        "created_by": created_by,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": inputs,
        "class_names": list(CLASS_NAMES),
        "seg_class_names": list(SEG_CLASS_NAMES),
        "models": {
            "frame": {"file": frame_file, "int8_file": frame_int8_file,
                      "cpu_default": cpu_default or frame_file,
                      "input": "frames", "outputs": _frame_outputs(finding_names),
                      **({"finding_names": list(finding_names)} if finding_names else {})},
            "seg": [{"input": "image", "outputs": SEG_OUTPUTS, **m} for m in seg_members],
            **({"seg_display": dict(seg_display)} if seg_display else {}),
        },
        "aggregator": ({"file": aggregator_file, "kind": "uninorm",
                        "meaning": "per-class neutral elements e of the uninorm video "
                                   "aggregation (Roy et al. 2020, section 2)"}
                       if aggregator_file else None),
        "files": files,
        "training": dict(training or {}),
        "commands": list(commands),
        "evaluation": dict(evaluation or {}),
    }
    if for_real_scans is None:
        for_real_scans = _infer_real_scans(manifest)
    if for_real_scans is not None:  # after "created_at", where a reader looks first
        items = list(manifest.items())
        at = [k for k, _ in items].index("created_at") + 1
        manifest = dict([*items[:at], ("for_real_scans", bool(for_real_scans)), *items[at:]])
    if extra:
        manifest.update(extra)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
