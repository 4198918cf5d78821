"""Importers: one per form a model arrives in, each saying what opening its files can do.

A model spec is a registry name, a ``file.py:factory``, an edgedl checkpoint or a state_dict, a
TorchScript file, a torch.export ``.pt2``, a Hugging Face folder or an ONNX file. Each form is one
module here with one :class:`Importer` subclass, which registers itself by ``name``; the order of
:data:`ORDER` decides which one claims a spec (by suffix, folder, or the file's own table of
contents, never by running it). Every importer declares:

- ``runs_code``: opening its files can execute code they hold or name (TorchScript programs,
  pickles, a factory a checkpoint names). Those open only when the user trusts them
  (``--trust-model-code``), and the refusal says so. Trust never comes from a file that travels
  with the model.
- ``module``: what the pipeline gets: ``python`` (a torch module with its Python class: every stage
  works on it), ``script`` (TorchScript), ``graph`` (a torch.export graph) or None (an ONNX file:
  quantize, evaluate, bench); ``cannot`` says why stages that change a Python module refuse the rest.
"""

from __future__ import annotations

import importlib
import zipfile
from pathlib import Path
from typing import Any, ClassVar

from edgedl.errors import UsageError

IMPORTERS: dict[str, type["Importer"]] = {}
# The order importers claim a spec in: files known by their suffix or contents first, a registry
# name last (anything else is a name).
ORDER = ("onnx", "hf", "pt2", "torchscript", "checkpoint", "factory", "registry")


class Importer:
    """One form of model spec. Subclasses set the class attributes and override the methods."""

    name: ClassVar[str] = ""
    runs_code: ClassVar[bool] = False
    module: ClassVar[str | None] = "python"
    opens: ClassVar[str] = ""  # what opening a file of this form does (the README's security table)
    cannot: ClassVar[str] = ""  # why stages that change a Python module refuse this form

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in IMPORTERS:
                raise ValueError(f"importer '{cls.name}' is defined twice")
            IMPORTERS[cls.name] = cls

    @classmethod
    def matches(cls, spec: str) -> bool:  # pragma: no cover - contract
        """Whether this importer reads ``spec``, judged from its form and table of contents only."""
        raise NotImplementedError

    def check(self, spec: str, *, trust: bool = False, weights: str | None = None) -> None:
        """Refuse (UsageError, TrustError) what loading would refuse, before any work; cheap."""

    def load(self, spec: str, *, trust: bool = False, weights: str | None = None,
             kwargs: dict | None = None) -> Any:  # pragma: no cover - contract
        """The model as an :class:`edgedl.models.spec.LoadedModel`."""
        raise NotImplementedError

    def stem(self, spec: str) -> str:
        """The name of the run and its files: the file's or the folder's name."""
        return Path(spec.rstrip("/")).name.split(".")[0]


def _ensure_loaded() -> None:
    for name in ORDER:
        if name not in IMPORTERS:
            importlib.import_module(f"edgedl.models.importers.{name}")


def registered() -> dict[str, type[Importer]]:
    """Every importer, by name, in claim order."""
    _ensure_loaded()
    return {name: IMPORTERS[name] for name in ORDER}


def importer_for(spec: str) -> Importer:
    """The importer that claims ``spec`` (the registry's when no other does)."""
    _ensure_loaded()
    for name in ORDER:
        cls = IMPORTERS[name]
        if cls.matches(spec):
            return cls()
    raise UsageError(f"cannot tell what model '{spec}' is")  # pragma: no cover - the registry claims the rest


def zip_names(path: str | Path) -> list[str] | None:
    """The member names of a zip archive (torch.save, TorchScript and .pt2 files are zips), or None
    for a file that is not one. Reads the archive's directory only."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


def is_torchscript_zip(names: list[str] | None) -> bool:
    """torch.jit.save writes ``<name>/code/...`` and ``<name>/constants.pkl``; torch.save does not."""
    return bool(names) and any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors run to pages)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
