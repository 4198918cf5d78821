"""INT8 as one algorithm for every format (NNCF-style: the algorithm over small per-format backends).

- ``quality``: the accuracy gate (accuracy, agreement, every output and scale group, or the
  recipe's own measure), measured on the artifact through edgedl.runtime;
- ``speed``: the one speed verdict, from a file and its float parent timed in alternating rounds
  (the quantize stage's quick check and the benchmark stage's fresh processes both give it);
- ``rules``: what stays in float before any search (tensors that join values of scales 100x apart);
- ``search``: schemes, the per-layer float fallback ranked by sensitivity, the fastest candidate
  that meets the gate, and the speed gate's slow-in-INT8 retry;
- ``backend``: the contract a format supplies (``quantize(scheme, dst, exclude, only)``,
  ``quantizable_nodes``, ``graph``, ``peaks``), registered by format: ONNX Runtime's QDQ (its
  ``tensorrt`` scheme is TensorRT's explicit Q/DQ) and LiteRT's ai-edge-quantizer.
"""
