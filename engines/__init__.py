"""pleura engines: the model bundle, the preprocessing contract, inference backends, uninorm.

Imports only numpy (and onnxruntime / tensorrt lazily, when a backend is created).
"""
