"""LiteRT (TFLite): conversion (litert-torch), quantization (ai-edge-quantizer), static analysis."""
