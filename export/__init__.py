"""Training and ONNX export (PyTorch). The only package of this project that imports torch."""
