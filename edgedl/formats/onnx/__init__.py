"""ONNX: export from torch, import, quantization (onnxruntime.quantization), static analysis."""
