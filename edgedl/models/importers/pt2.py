"""A torch.export archive (``.pt2``, ``torch.export.save``): a graph in JSON and raw tensor buffers,
which open without running code, except where torch would unpickle (weights or constants saved
with pickle, custom objects, sample inputs that ``weights_only`` refuses). edgedl reads the
archive's own tables first and refuses those, unless trusted, before torch opens it."""

from __future__ import annotations

import json
import re
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
            raise TrustError(f"{path.name} has parts torch.export.load would unpickle or that are not torch.export.save's "
                             f"layout ({', '.join(pickled[:3])}), which can run any code they name: edgedl opens it "
                             "only with --trust-model-code; re-save it with plain tensors (torch.export.save of a model "
                             "without custom objects)")

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

    try:
        with zipfile.ZipFile(path) as archive:
            tables = [_zip_json(archive, n, path) for n in archive.namelist() if "/models/" in n and n.endswith(".json")]
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:  # a bad CRC, a truncated member
        raise UsageError(f"{path} is not a readable .pt2 archive: {first_line(exc)}") from None
    for model in tables:
        version = model.get("schema_version") or {}
        major = version.get("major") if isinstance(version, dict) else None
        if isinstance(major, int) and major != SCHEMA_VERSION[0]:
            written = model.get("torch_version") or "another torch"
            raise UsageError(f"{path.name} was written by torch {written} (export schema {major}.{version.get('minor')}); "
                             f"this torch {torch.__version__} reads schema {SCHEMA_VERSION[0]}.x: export it again "
                             "with this torch, or bring it as ONNX")


def _zip_json(archive: zipfile.ZipFile, name: str, path: Path) -> dict:
    info = archive.getinfo(name)
    if info.file_size > CONFIG_LIMIT:
        raise UsageError(f"{path.name}: {name} is {info.file_size} bytes, over the {CONFIG_LIMIT >> 20} MiB a table may hold")
    try:
        table = json.loads(archive.read(name))
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{path.name}: {name} is not valid JSON ({first_line(exc)})") from None
    if not isinstance(table, dict):
        raise UsageError(f"{path.name}: {name} holds a JSON {type(table).__name__}, not a table")
    return table


# torch.export.save's layout (torch 2.13), below the archive's one top folder. Anything else is
# refused unless trusted: torch.export.load falls back to its older reader for an archive it does not
# recognise, and that reader unpickles (serialized_*.pt), as AOTInductor packages load native code.
_LAYOUT = re.compile(r"(models/[^/]+\.json|data/(weights|constants)/[^/]+|data/sample_inputs/[^/]+\.pt"
                     r"|archive_format|archive_version|byteorder|version|\.data/version|\.data/serialization_id"
                     r"|extra/[^/]+)")
SAMPLE_LIMIT = 64 << 20  # bytes of sample inputs read to check them


def pickled_members(path: Path) -> list[str]:
    """The archive members torch.export.load would unpickle (or that are not torch.export.save's
    layout), read from the archive's own tables without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if not any("/models/" in n and n.endswith(".json") for n in names):
                raise UsageError(f"{path.name} is not a torch.export archive (no models/*.json inside); "
                                 "torch.export.save writes one")
            tops = {n.split("/", 1)[0] for n in names}
            found = [n for n in names if len(tops) != 1 or "/" not in n or not _LAYOUT.fullmatch(n.split("/", 1)[1])]
            found += [n for n in names if n.endswith(".pt") and ("/data/weights/" in n or "/data/constants/" in n)]
            for name in names:
                if name.endswith(("_weights_config.json", "_constants_config.json")):
                    table = _zip_json(archive, name, path).get("config") or {}
                    if not isinstance(table, dict):
                        raise UsageError(f"{path.name}: {name} holds no table of tensors")
                    for fqn, meta in table.items():
                        meta = meta if isinstance(meta, dict) else {}
                        pathname = str(meta.get("path_name", ""))
                        if meta.get("use_pickle") or pathname.startswith(_PICKLED_PREFIXES):
                            found.append(f"{fqn} ({pathname})")
            for name in names:  # sample inputs: torch falls back to a full unpickle when weights_only fails
                if "/data/sample_inputs/" in name:
                    if archive.getinfo(name).file_size > SAMPLE_LIMIT:
                        found.append(f"{name.split('/', 1)[-1]} (over {SAMPLE_LIMIT >> 20} MiB, not read)")
                    elif not _weights_only(archive.read(name)):
                        found.append(name.split("/", 1)[-1])
            return found
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, AttributeError) as exc:  # non-UTF-8 names: ValueError
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
