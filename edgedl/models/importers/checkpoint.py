"""An edgedl checkpoint (``.pt`` from ``edgedl train`` or a run): read with ``weights_only=True``,
its architecture rebuilt by the importer of the spec it records. A bare state_dict holds no
architecture (it takes ``--model file.py:build --weights``), and a pickled module opens only with
``--trust-model-code``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedl.errors import UsageError
from edgedl.models.importers import Importer

SUFFIXES = (".pt", ".pth", ".bin")


class CheckpointImporter(Importer):
    name = "checkpoint"
    opens = ("reads tensors and plain values (torch.load weights_only=True); a factory the checkpoint names runs "
             "only when trusted, a pickled module only unpickles when trusted")

    @classmethod
    def matches(cls, spec: str) -> bool:
        return spec.lower().endswith(SUFFIXES)

    def check(self, spec: str, *, trust: bool = False, weights: str | None = None) -> None:
        if weights is not None:
            raise UsageError(f"--weights goes with an architecture (--model file.py:build or a registry name); "
                             f"{Path(spec).name} is a checkpoint and brings its own weights")
        kind, found = self._open(spec, trust)
        if kind == "checkpoint":
            self._refuse_code(spec, found, trust)

    def _refuse_code(self, spec: str, payload: dict, trust: bool) -> None:
        """The refusal load_checkpoint makes for an architecture that runs code, made before any work."""
        from edgedl.models.importers import importer_for
        from edgedl.models.spec import _resolved_from, is_factory_spec, refuse_untrusted_factory

        named = str((payload.get("arch") or {}).get("spec", ""))
        target = importer_for(_resolved_from(named, Path(spec).parent)) if named else None
        runs = is_factory_spec(named) or (target is not None and (target.runs_code or target.name == "checkpoint"))
        if runs and not trust:
            refuse_untrusted_factory(spec, named)

    def _open(self, spec: str, trust: bool) -> tuple[str, Any]:
        """One read of the file: ``("module", m)`` for a pickled module (unpickled only when trusted) or
        ``("checkpoint", payload)``; a bare state_dict or anything else is one line saying what to do."""
        import torch

        from edgedl.models.importers.factory import unpickle_trusted
        from edgedl.models.spec import read_checkpoint

        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"checkpoint not found: {path}")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            module = unpickle_trusted(path, exc, trust)
            if not isinstance(module, torch.nn.Module):
                raise UsageError(f"{path.name} unpickles to a {type(module).__name__}, not a torch.nn.Module") from None
            return "module", module
        if not (isinstance(raw, dict) and isinstance(raw.get("edgedl_checkpoint"), int)):
            count = len(raw) if isinstance(raw, dict) else 0
            what = f"weights only (a state_dict of {count} tensors)" if count else f"a {type(raw).__name__}"
            raise UsageError(f"{path.name} holds {what}, not an architecture: name the model that takes them, "
                             f"--model path/to/file.py:build --weights {path} (or a registry name with --weights)")
        return "checkpoint", read_checkpoint(path, payload=raw)

    def load(self, spec: str, *, trust: bool = False, weights: str | None = None, kwargs: dict | None = None):
        from edgedl.models.spec import LoadedModel, load_checkpoint

        path = Path(spec)
        kind, found = self._open(spec, trust)
        if kind == "module":  # a pickled module, opened because the user trusts it
            return LoadedModel(found, {"spec": str(path.resolve()), "kwargs": {}}, kind="pickle",
                               notes=[f"{path.name} is a pickled module, unpickled with --trust-model-code"])
        self._refuse_code(spec, found, trust)
        return load_checkpoint(path, trust_model_code=trust, payload=found)
