"""A torch.export archive (``.pt2``, ``torch.export.save``): a graph in JSON and raw tensor buffers,
which open without running code, except where torch would unpickle (weights or constants saved
with pickle, custom objects, sample inputs that ``weights_only`` refuses). edgedl reads the
archive's own tables first and refuses those, unless trusted, before torch opens it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from edgedl.errors import TrustError, UsageError
from edgedl.models.importers import Importer, first_line

# What torch.export.load unpickles (torch/export/pt2_archive/_package.py, torch 2.13).
_PICKLED_PREFIXES = ("custom_obj_", "opaque_obj_")
CONFIG_LIMIT = 16 << 20  # bytes of JSON an archive's table may hold


class Pt2Importer(Importer):
    name = "pt2"
    module = "graph"
    opens = ("reads a JSON graph and raw tensors; refused (unless trusted) where torch.export.load would unpickle: "
             "pickled weights or constants, custom objects, sample inputs")
    cannot = ("a .pt2 holds a traced graph, not the model's Python class: edgedl quantizes, exports (ONNX, TFLite), "
              "evaluates and benchmarks it; to prune, distill or train, bring the Python model (file.py:build with "
              "--weights)")

    @classmethod
    def matches(cls, spec: str) -> bool:
        return spec.lower().endswith(".pt2")

    def check(self, spec: str, *, trust: bool = False, weights: str | None = None) -> None:
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"model file not found: {path}")
        if weights is not None:
            raise UsageError(f"--weights goes with an architecture; {path.name} holds its own weights")
        pickled = pickled_members(path)
        check_schema(path)
        if pickled and not trust:
            raise TrustError(f"{path.name} has pickled parts ({', '.join(pickled[:3])}), which torch.export.load "
                             "unpickles, running any code they name: edgedl opens it only with --trust-model-code; "
                             "re-save it with plain tensors (torch.export.save of a model without custom objects)")

    def load(self, spec: str, *, trust: bool = False, weights: str | None = None, kwargs: dict | None = None):
        import torch

        from edgedl.models.spec import LoadedModel

        self.check(spec, trust=trust, weights=weights)
        path = Path(spec)
        import logging
        import warnings

        check_schema(path)
        log = logging.getLogger("torch.export")  # it logs a traceback before raising its own error
        level = log.level
        log.setLevel(logging.CRITICAL)
        try:
            with warnings.catch_warnings():  # torch's own deprecation notes about its pytree classes
                warnings.simplefilter("ignore", FutureWarning)
                program = torch.export.load(str(path))
        except Exception as exc:
            message = first_line(exc)
            if "version" in message.lower() or "schema" in message.lower():
                raise UsageError(f"{path.name} was written by another torch ({message}); this is torch "
                                 f"{torch.__version__}: re-export it with this version") from None
            raise UsageError(f"cannot load {path} with torch.export.load: {message}") from None
        finally:
            log.setLevel(level)
        loaded = LoadedModel(exported_module(program), {"spec": str(path.resolve()), "kwargs": {}}, kind="graph")
        loaded.inputs = program_inputs(program)
        return loaded


def check_schema(path: Path) -> None:
    """Refuse, in one line, a .pt2 whose graph schema this torch does not read (a newer or much older
    torch wrote it), before torch.export.load fails with a page of traceback."""
    import torch
    from torch._export.serde.schema import SCHEMA_VERSION

    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if "/models/" in name and name.endswith(".json"):
                model = _zip_json(archive, name, path)
                version = model.get("schema_version") or {}
                major = version.get("major") if isinstance(version, dict) else None
                if isinstance(major, int) and major != SCHEMA_VERSION[0]:
                    written = model.get("torch_version") or "another torch"
                    raise UsageError(f"{path.name} was written by torch {written} (export schema {major}.{version.get('minor')}); "
                                     f"this torch {torch.__version__} reads schema {SCHEMA_VERSION[0]}.x: export it "
                                     "again with this torch, or bring it as ONNX")


def _zip_json(archive: zipfile.ZipFile, name: str, path: Path) -> dict:
    info = archive.getinfo(name)
    if info.file_size > CONFIG_LIMIT:
        raise UsageError(f"{path.name}: {name} is {info.file_size} bytes, over the {CONFIG_LIMIT >> 20} MiB a table may hold")
    try:
        return json.loads(archive.read(name))
    except ValueError as exc:
        raise UsageError(f"{path.name}: {name} is not valid JSON ({first_line(exc)})") from None


def pickled_members(path: Path) -> list[str]:
    """The archive members torch.export.load would unpickle, read from the archive's own tables."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any("/models/" in n and n.endswith(".json") for n in names):
                raise UsageError(f"{path.name} is not a torch.export archive (no models/*.json inside); "
                                 "torch.export.save writes one")
            found = [n for n in names if n.endswith(".pt") and ("/data/weights/" in n or "/data/constants/" in n)]
            for name in names:
                if name.endswith(("_weights_config.json", "_constants_config.json")):
                    table = _zip_json(archive, name, path).get("config") or {}
                    for fqn, meta in table.items():
                        pathname = str((meta or {}).get("path_name", ""))
                        if (meta or {}).get("use_pickle") or pathname.startswith(_PICKLED_PREFIXES):
                            found.append(f"{fqn} ({pathname})")
            for name in names:  # sample inputs: torch falls back to a full unpickle when weights_only fails
                if "/data/sample_inputs/" in name and not _weights_only(archive.read(name)):
                    found.append(name.split("/", 1)[-1])
            return found
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:  # a member name that is not UTF-8 is a ValueError
        raise UsageError(f"{path} is not a readable .pt2 archive: {first_line(exc)}") from None


def _weights_only(data: bytes) -> bool:
    import io

    import torch

    try:
        torch.load(io.BytesIO(data), weights_only=True)
        return True
    except Exception:
        return False


def exported_module(program):
    """The program's module, made to take ``train()``/``eval()``, which every stage calls and
    torch.export's unlifted graph refuses (its mode was fixed when it was exported: it keeps it).
    ``exported_program`` keeps the program itself, which the ONNX exporter takes as it is."""
    import types

    graph = program.module()

    def train(self, mode: bool = True):
        object.__setattr__(self, "training", mode)
        return self

    graph.__dict__["train"] = types.MethodType(train, graph)
    graph.__dict__["eval"] = types.MethodType(lambda self: train(self, False), graph)
    graph.__dict__["exported_program"] = program
    return graph


def program_inputs(program) -> list:
    """The program's tensor inputs as runtime TensorInfos (names and shapes from the graph; dynamic
    dimensions as None)."""
    from edgedl.runtime.base import TensorInfo

    specs = {s.arg.name: s for s in program.graph_signature.input_specs
             if getattr(s.kind, "name", "") == "USER_INPUT" and hasattr(s.arg, "name")}
    infos = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in specs:
            continue
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            continue
        shape = tuple(int(d) if str(d).lstrip("-").isdigit() else None for d in val.shape)
        infos.append(TensorInfo(node.name, shape, str(val.dtype).replace("torch.", "")))
    return infos
