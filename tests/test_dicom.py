"""DICOM multi-frame cine as a source (issue #14): a cine built here with pydicom scores the
same as its frames given as a folder of PNG images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.scorer import load_scorer
from stream.score import score_paths
from stream.sources import SourceError, decode_file
from stream.sources.dicom import decode_dicom, is_dicom

pydicom = pytest.importorskip("pydicom")
DEMO = Path(__file__).resolve().parents[1] / "stream" / "demo"


def write_dicom(path: Path, frames: np.ndarray, rgb: bool, frame_time_ms: float = 50.0) -> None:
    """Uncompressed 8-bit multi-frame ultrasound DICOM: frames (N, H, W) or (N, H, W, 3)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientID = "P07"
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.FrameTime = frame_time_ms
    ds.PixelData = np.ascontiguousarray(frames, dtype=np.uint8).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    imgs = [f.image for f in decode_file(DEMO / "demo-convex.mp4", max_frames=200)]
    return np.stack([imgs[i] for i in (10, 70, 130, 190)])  # (4, 256, 256, 3), grey content


@pytest.mark.parametrize("rgb", [False, True])
def test_dicom_scores_like_png_folder(tmp_path, frames, rgb):
    data = frames.copy() if rgb else frames[..., 0].copy()
    if rgb:  # make the colour channels differ, so a channel mix-up would show
        data[..., 0] = np.clip(data[..., 0].astype(int) + 20, 0, 255)
    dcm = tmp_path / "P07_R1.dcm"
    write_dicom(dcm, data, rgb)
    png_dir = tmp_path / "P07_R1"
    png_dir.mkdir()
    for i, f in enumerate(data):
        bgr = cv2.cvtColor(f, cv2.COLOR_RGB2BGR) if rgb else f
        cv2.imwrite(str(png_dir / f"{i:04d}.png"), bgr)
    decoded = list(decode_file(dcm))
    assert len(decoded) == len(data)
    assert decoded[1].pts_s == pytest.approx(0.05)  # FrameTime 50 ms -> 20 fps
    expect = data if rgb else np.repeat(data[..., None], 3, axis=3)
    np.testing.assert_array_equal(np.stack([d.image for d in decoded]), expect)

    scorer = load_scorer(None)
    doc = score_paths([dcm, png_dir], scorer, echo=None)
    a, b = doc["clips"]
    assert a["ok"] and b["ok"]
    pa = np.array([fr["probs"] for fr in a["frames"]])
    pb = np.array([fr["probs"] for fr in b["frames"]])
    np.testing.assert_allclose(pa, pb, atol=1e-4)
    np.testing.assert_allclose(a["video"]["probs"], b["video"]["probs"], atol=1e-4)
    assert a["video"]["score"] == b["video"]["score"]


def test_dicom_detected_by_preamble_and_bad_file_is_a_source_error(tmp_path, frames):
    path = tmp_path / "cine.bin"
    write_dicom(path, frames[:2, ..., 0].copy(), rgb=False)
    assert is_dicom(path)
    assert len(list(decode_file(path))) == 2
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\0" * 132 + b"not dicom")
    with pytest.raises(SourceError, match="not a readable DICOM"):
        list(decode_dicom(bad))


def test_page_accepts_a_dicom_upload(tmp_path, frames):
    from ui.safety import SafetyError, UploadLimits, check_upload

    path = tmp_path / "cine.dcm"
    write_dicom(path, frames[..., 0].copy(), rgb=False, frame_time_ms=40.0)
    assert check_upload(path) == path.resolve()
    with pytest.raises(SafetyError, match="has 4 frames; the limit is 3"):
        check_upload(path, UploadLimits(max_frames=3))
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 200)
    with pytest.raises(SafetyError, match="could not be read as DICOM"):
        check_upload(bad)
