"""``edgedl build-engine``: check, plan, build (or reuse from the cache) and record one engine.

Everything that can be checked without TensorRT is checked first (the file, the precision against
its Q/DQ nodes, the profile); then TensorRT is imported, the graph is linted against the running
version, and the engine comes from the cache or from Polygraphy. The engine and its sidecar are
written atomically.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgedl.errors import EdgedlError, UsageError
from edgedl.formats.onnx import graph as onnx_graph
from edgedl.formats.tensorrt import plan as tp
from edgedl.formats.tensorrt.versions import resolve
from edgedl.runtime.sidecar import SIDECAR_OWN_KEYS


def compress_hint(onnx: Path, device: str | None) -> str:
    sidecar_model = onnx.name.split(".")[0]
    return (f"edgedl compress --model {sidecar_model}.pt --data DATA --quantize int8 --targets tensorrt"
            + (f" --device {device}" if device else "") + " (or quantize this ONNX: edgedl compress --model "
            f"{onnx} --data DATA --quantize int8 --targets tensorrt)")


def prepare(onnx: str | Path, options: tp.BuildOptions, device: str | None = None):
    """The checks that need no TensorRT: returns (model, precision, profile)."""
    onnx = Path(onnx)
    if not onnx.is_file():
        raise UsageError(f"ONNX file not found: {onnx}")
    if onnx.suffix.lower() != ".onnx":
        raise UsageError(f"build-engine takes an .onnx file; got {onnx.name}")
    try:
        model = onnx_graph.load_graph(onnx)
    except EdgedlError as exc:
        raise UsageError(str(exc)) from None
    precision = tp.resolve_precision(options, tp.onnx_precision(model), onnx.name, compress_hint(onnx, device))
    inputs = [(v.name, onnx_graph._dims(v.type)) for v in onnx_graph.graph_inputs(model)]
    return model, precision, tp.profile_for(inputs, options.batch)


def plan(onnx: str | Path, options: tp.BuildOptions, device: str | None = None, tensorrt: str | None = None,
         onnx_name: str | None = None, engine: str | None = None) -> dict:
    """The build plan of ``onnx`` for a device, without TensorRT: the lint for the TensorRT version the
    device (or ``tensorrt``) means, the ``edgedl build-engine`` and ``trtexec`` lines, the cache key."""
    from edgedl._fs import sha256_file
    from edgedl.devices import get_profile, resolve_device
    from edgedl.formats.tensorrt.lint import lint

    profile = get_profile(device) if device not in (None, "host") else None
    trt = resolve(tensorrt, profile)
    model, precision, shapes = prepare(onnx, options, device)
    report = lint(onnx, trt.version, profile=profile, dla=options.dla_core is not None,
                  input_shapes={k: v[2] for k, v in shapes.shapes.items()}, model=model)
    cc = profile.gpu.compute_capability if profile and profile.gpu else None
    return tp.make_plan(onnx_name or str(onnx), options, precision, trt, shapes, resolve_device(device), report,
                        sha256_file(onnx), cc, engine)


def rejection(name: str, version: str, findings: list[dict]) -> str | None:
    """One line naming the first lint errors (the parser would reject the file), or None."""
    from edgedl.formats.tensorrt.lint import Finding

    errors = [Finding(**f) for f in findings if f["severity"] == "error"]
    if not errors:
        return None
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return f"TensorRT {version}'s ONNX parser would reject {name}: " + " | ".join(f.line() for f in errors[:5]) + more


def cache_dir(path: str | Path | None = None) -> Path:
    import os

    if path:
        return Path(path)
    return Path(os.environ.get("EDGEDL_ENGINE_CACHE") or Path.home() / ".cache" / "edgedl" / "engines")


def build_engine(onnx: str | Path, out: str | Path | None = None, options: tp.BuildOptions | None = None,
                 device: str | None = None, cache: str | Path | None = None, use_cache: bool = True,
                 console=None) -> dict:
    """Build (or fetch from the cache) the engine of ``onnx`` on this machine's GPU and TensorRT.

    Returns the engine's sidecar, with ``cached`` saying whether the build was reused.
    """
    from edgedl._fs import atomic_write_bytes, sha256_file
    from edgedl.artifacts import write_sidecar
    from edgedl.formats.tensorrt import build as tb
    from edgedl.formats.tensorrt.lint import lint
    from edgedl.runtime.sidecar import read_sidecar
    from edgedl.runtime.tensorrt import running_facts

    options = options or tp.BuildOptions()
    onnx = Path(onnx)
    out = Path(out) if out else onnx.with_suffix(".engine")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    model, precision, profile = prepare(onnx, options, device)
    facts = running_facts()  # imports TensorRT: one line naming where it comes from when it is missing
    trt = resolve(facts["tensorrt"])
    shapes = {name: s[2] for name, s in profile.shapes.items()}
    report = lint(onnx, facts["tensorrt"], dla=options.dla_core is not None, input_shapes=shapes, model=model)
    rejected = rejection(onnx.name, facts["tensorrt"], report["findings"])
    if rejected:
        raise EdgedlError(rejected)
    onnx_sha = sha256_file(onnx)
    key = tp.cache_key(onnx_sha, facts["tensorrt"], facts["compute_capability"], precision, options, profile)
    cached = cache_dir(cache) / f"{key[:32]}.engine"
    if use_cache and cached.is_file() and (read_sidecar(cached) or {}).get("cache_key") == key:
        if cached.resolve() != out.resolve():
            shutil.copyfile(cached, out.with_name(out.name + ".part"))
            out.with_name(out.name + ".part").replace(out)
        body = {k: v for k, v in read_sidecar(cached).items() if k not in SIDECAR_OWN_KEYS}
        return {**write_sidecar(out, "tensorrt", precision, body), "cached": True}
    source = onnx
    work = None
    if precision == "fp16" and trt.strongly_typed_only:  # no FP16 flag in 11: build a float16 ONNX strongly typed
        import tempfile

        from edgedl.formats.onnx.quantize import convert_fp16

        work = Path(tempfile.mkdtemp(prefix="edgedl-fp16-"))
        source = work / onnx.name
        convert_fp16(onnx, source)
    try:
        args = tb.loader_args(source, options, precision, trt, profile)
        if console is not None:
            console.print(f"building {out.name} with TensorRT {facts['tensorrt']} on {facts['gpu']} ({precision})")
        engine = tb.build(args)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    atomic_write_bytes(out, engine)
    body = {k: v for k, v in (read_sidecar(onnx) or {}).items() if k not in SIDECAR_OWN_KEYS}
    body.update(engine_record(out, onnx, onnx_sha, facts, options, profile, key, report))
    sidecar = write_sidecar(out, "tensorrt", precision, body)
    if use_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cached, engine)
        write_sidecar(cached, "tensorrt", precision, body)
    return {**sidecar, "cached": False}


def engine_record(engine: Path, onnx: Path, onnx_sha: str, facts: dict, options: tp.BuildOptions, profile: tp.Profile,
                  key: str, report: dict) -> dict:
    """What an engine's sidecar says beyond the ONNX's: how and where it was built, and its I/O."""
    from edgedl.runtime.tensorrt import import_tensorrt

    trt = import_tensorrt()  # the engine is read back once: its I/O, and proof that it deserializes
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    deserialized = runtime.deserialize_cuda_engine(engine.read_bytes())
    io = []
    for i in range(deserialized.num_io_tensors):
        name = deserialized.get_tensor_name(i)
        io.append({"name": name,
                   "mode": "input" if deserialized.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output",
                   "shape": [None if d < 0 else int(d) for d in deserialized.get_tensor_shape(name)],
                   "dtype": str(trt.nptype(deserialized.get_tensor_dtype(name)).__name__)})
    return {
        "tensorrt": {"version": facts["tensorrt"], "version_compatible": options.version_compatible,
                     "hardware_compatibility": "ampere+" if options.hardware_compatible else None},
        "gpu": {"name": facts["gpu"], "compute_capability": facts["compute_capability"]},
        "dla_core": options.dla_core,
        "sparsity": options.sparsity,
        "profile": {k: [list(x) for x in v] for k, v in profile.shapes.items()},
        "io": io,
        "source_onnx": {"name": onnx.name, "sha256": onnx_sha},
        "cache_key": key,
        "lint": report["counts"],
    }
