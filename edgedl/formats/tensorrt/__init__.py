"""TensorRT: what its ONNX parser accepts (lint), engine builds through Polygraphy (build), and what to
run on the device (plan). Only ``build`` imports TensorRT, and only when an engine is built."""
