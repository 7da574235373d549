"""The lung-ultrasound simulator behind ``pleura synth`` (numpy + OpenCV, no torch)."""

from train.synth.writer import SynthConfig, write_dataset

__all__ = ["SynthConfig", "write_dataset"]
