"""Static description of an edgedl checkpoint (``edgedl inspect model.pt``), read without running
code the file names: the architecture is built (for MACs) only from the registry or when trusted."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from edgedl.errors import EdgedlError

_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def summarize(path: str | Path, target: str | None = None, trust_model_code: bool = False) -> dict[str, Any]:
    """Architecture, inputs, outputs, parameters, MACs (when the architecture may be built) and size."""
    from edgedl.models.spec import checkpoint_input_shape, is_factory_spec, load_checkpoint, read_checkpoint
    from edgedl.runtime.sidecar import read_sidecar

    if target:
        from edgedl.errors import UsageError

        raise UsageError("--target applies to .onnx and .tflite files; export the checkpoint first")
    path = Path(path)
    payload = read_checkpoint(path)
    arch = payload.get("arch") or {}
    spec = str(arch.get("spec", ""))
    runs_code = is_factory_spec(spec)
    state = payload.get("state_dict") or {}
    params = sum(math.prod(v.shape) for k, v in state.items() if not k.endswith(_BUFFERS))
    sidecar = read_sidecar(path) or {}
    shape = checkpoint_input_shape(payload)
    inputs = sidecar.get("inputs") or ([{"name": "input", "shape": [None, *shape], "dtype": "float32"}] if shape else [])
    notes: dict[str, str] = {}
    macs = None
    if runs_code and not trust_model_code:
        notes["macs"] = (f"not counted: the architecture comes from the factory '{spec}' (Python code the file names); "
                         "pass --trust-model-code to build it")
    elif not shape:
        notes["macs"] = "not counted: the checkpoint records no input shape"
    else:
        from edgedl.formats.torch.pruning import count_macs_params

        try:
            module = load_checkpoint(path, trust_model_code=trust_model_code).module
            macs, _ = count_macs_params(module, tuple(shape))
        except EdgedlError as exc:
            notes["macs"] = f"not counted: {exc}"
    meta = payload.get("meta") or {}
    return {
        "path": str(path),
        "format": "torch",
        "checkpoint_format": payload.get("edgedl_checkpoint"),
        "architecture": {"spec": spec, "kwargs": arch.get("kwargs") or {},
                         "runs_code": runs_code, "source": "user factory" if runs_code else "edgedl registry"},
        "inputs": inputs,
        "outputs": sidecar.get("outputs", []),
        "ops": {},
        "nodes": None,
        "params": params,
        "macs": macs,
        "notes": notes,
        "meta": meta,
        "size_bytes": path.stat().st_size,
        "can": ["bench (torch backend)", "export through `edgedl compress --model " + path.name + "`"],
    }
