"""PyTorch backend: runs an edgedl checkpoint (``.pt``) as the reference the exports are held to."""

from __future__ import annotations

import numpy as np

from edgedl.errors import EdgedlError, MissingDependencyError, UsageError
from edgedl.runtime.base import Runner, TensorInfo


class TorchRunner(Runner):
    """Runs ``.pt`` checkpoints written by edgedl (loaded with ``weights_only=True``).

    A checkpoint whose architecture comes from a user factory runs only with
    ``trust_model_code=True`` or a ``factory`` named by the caller.

    ``threads`` sets torch's intra-op thread count, which is global to the process in PyTorch.
    ``compute='cuda'`` runs on the GPU and ``'cuda-fp16'`` in half precision there; inputs and
    outputs stay float32 numpy arrays on the host. On the GPU each call's kernel time is also taken
    with CUDA events (``gpu_ms``), apart from the host-to-device copies the wall-clock time includes.
    """

    backend = "torch"

    def _load_impl(self) -> None:
        try:
            import torch
        except ImportError:
            raise MissingDependencyError("torch", "torch", "Running PyTorch checkpoints") from None
        from edgedl.models.spec import load_checkpoint

        if self.compute not in (None, "cpu", "cuda", "cuda-fp16"):
            raise UsageError(f"unknown compute unit '{self.compute}' for the torch backend; use cpu, cuda or "
                              "cuda-fp16")
        cuda = self.compute in ("cuda", "cuda-fp16")
        if cuda and not torch.cuda.is_available():
            raise EdgedlError("torch here has no CUDA device; use compute=cpu")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        self._torch = torch
        self.preallocate = False  # torch allocates its outputs itself
        self._device = torch.device("cuda" if cuda else "cpu")
        self._half = self.compute == "cuda-fp16"
        self.gpu_ms: list[float] | None = [] if cuda else None  # per-call kernel time from CUDA events
        loaded = load_checkpoint(self.path, trust_model_code=self.trust_model_code, factory=self.factory)
        self._module = loaded.module.eval().to(self._device)
        if self._half:
            self._module = self._module.half()
        meta = loaded.checkpoint or {}
        declared = self.sidecar.get("inputs")
        if not declared and meta.get("input_shape"):
            declared = [{"name": "input", "shape": [None, *meta["input_shape"]], "dtype": "float32", "layout": None}]
        if not declared:
            raise EdgedlError(f"{self.path.name} does not record its input shape (no sidecar, no input_shape, no "
                              "input size in its architecture options); re-save it with `edgedl train`")
        self._inputs = tuple(TensorInfo(t["name"], tuple(t["shape"]), t.get("dtype", "float32"),
                                        t.get("layout")) for t in declared)
        with torch.inference_mode():
            outs = self._forward({i.name: np.zeros(i.concrete_shape(), i.dtype) for i in self._inputs})
        names = [t["name"] for t in self.sidecar.get("outputs", [])]
        if len(names) != len(outs):
            names = ["output"] if len(outs) == 1 else [f"output_{k}" for k in range(len(outs))]
        self._outputs = tuple(TensorInfo(n, (None, *o.shape[1:]), o.dtype.name) for n, o in zip(names, outs))

    def _forward(self, feeds):
        torch = self._torch
        names = getattr(self, "_file_inputs", None) or [i.name for i in self._inputs]  # set once loaded
        args = [torch.from_numpy(feeds[name]).to(self._device) for name in names]
        if self._half:
            args = [a.half() if a.is_floating_point() else a for a in args]
        if self.gpu_ms is None:
            out = self._module(*args)
        else:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self._module(*args)
            end.record()
        outs = out if isinstance(out, (tuple, list)) else (out,)
        result = [(o.float() if self._half else o).detach().cpu().numpy() for o in outs]  # .cpu() waits for the GPU
        if self.gpu_ms is not None:
            self.gpu_ms.append(start.elapsed_time(end))
        return result

    def _run_impl(self, feeds):
        with self._torch.inference_mode():
            return self._forward(feeds)

    def _close_impl(self) -> None:
        self._module = None
