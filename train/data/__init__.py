"""Dataset readers: the on-disk layout of DESIGN.md and the real POCUS clips' manifest."""

from train.data.layout import (
    DatasetError,
    FrameRecord,
    LusDataset,
    VideoRecord,
    read_dataset,
    split_by_patient,
    video_label,
)
from train.data.pocus import PocusClip, read_pocus_manifest

__all__ = ["DatasetError", "FrameRecord", "LusDataset", "PocusClip", "VideoRecord",
           "read_dataset", "read_pocus_manifest", "split_by_patient", "video_label"]
