"""Training and evaluation on real lung-ultrasound clips (issue #13).

``clips``: which clips may be trained on (licences), the recording/patient groups and grouped
folds. ``frames``: decoded, letterboxed frames cached per clip. ``model``: the real-scan frame
network (per-frame intensity normalisation, score + findings heads). ``fit``: one training run.
``cv``: grouped cross-validation at clip level with the uninorm video score.
"""
