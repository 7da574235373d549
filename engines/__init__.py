"""pleura engines: the model bundle, the preprocessing contract, inference backends, uninorm.

Imports only numpy/cv2 here; onnxruntime when an engine is created, tensorrt only when that
backend is chosen.

    >>> import engines
    >>> eng = engines.create_engine(engines.default_bundle_path(), backend="auto")
    >>> out = eng.frame(x)  # x: (B, 3, 224, 224) from engines.preprocess.preprocess_batch
"""

from engines.backends import create_engine
from engines.bundle import Bundle, BundleError, default_bundle_path, load_bundle

__all__ = ["Bundle", "BundleError", "create_engine", "default_bundle_path", "load_bundle"]
