"""A TorchScript file (``torch.jit.save``): a program, with its own code inside; it opens only when
the user trusts it. The pipeline gets a ScriptModule: quantize, export to ONNX (through torch's
TorchScript-based exporter), evaluate and bench; no pruning, distillation or training (they need
the model's Python class), and no TFLite (litert-torch converts through torch.export, which does
not trace TorchScript)."""

from __future__ import annotations

from pathlib import Path

from edgedl.errors import TrustError, UsageError
from edgedl.models.importers import Importer, first_line, is_torchscript_zip, zip_names

SUFFIXES = (".ts", ".torchscript", ".jit")


class TorchScriptImporter(Importer):
    name = "torchscript"
    runs_code = True
    module = "script"
    opens = "runs the TorchScript program the file holds (its code/ folder) in torch's interpreter"
    cannot = ("a TorchScript file is a compiled program without its Python class: edgedl quantizes, exports to ONNX, "
              "evaluates and benchmarks it; TFLite needs torch.export, which does not trace TorchScript; to prune, "
              "distill or train, bring the Python model (file.py:build --weights)")

    @classmethod
    def matches(cls, spec: str) -> bool:
        lower = spec.lower()
        if lower.endswith(SUFFIXES):
            return True
        return lower.endswith((".pt", ".pth", ".zip")) and Path(spec).is_file() and is_torchscript_zip(zip_names(spec))

    def check(self, spec: str, *, trust: bool = False, weights: str | None = None) -> None:
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"model file not found: {path}")
        if weights is not None:
            raise UsageError(f"--weights goes with an architecture; {path.name} is a TorchScript file with its own weights")
        if not is_torchscript_zip(zip_names(path)):
            raise UsageError(f"{path.name} is not a TorchScript file (torch.jit.save writes a zip with code/ and "
                             "constants.pkl inside)")
        if not trust:
            raise TrustError(f"{path.name} is a TorchScript program, and opening it runs the code inside it: edgedl "
                             "opens it only with --trust-model-code; without running code, bring the model as "
                             "file.py:build --weights state_dict.pt, a .pt2 from torch.export, or an ONNX file")

    def load(self, spec: str, *, trust: bool = False, weights: str | None = None, kwargs: dict | None = None):
        import torch

        from edgedl.models.spec import LoadedModel

        self.check(spec, trust=trust, weights=weights)
        path = Path(spec)
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise UsageError(f"cannot load TorchScript {path}: {first_line(exc)}") from None
        return LoadedModel(module.eval(), {"spec": str(path.resolve()), "kwargs": {}}, kind="script")
