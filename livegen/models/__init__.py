"""The plugin host: model packages, their verification, onnxruntime sessions, sampling.

Context: setup (loading, verifying) and control (inference). Never imports torch.
"""
