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
from edgedl.runtime.platform import version_key
from edgedl.runtime.sidecar import SIDECAR_OWN_KEYS


def compress_hint(onnx: Path, device: str | None) -> str:
    """The compress command that writes the Q/DQ ONNX of the model ``onnx`` was exported from: the
    checkpoint its sidecar names (next to it in a run), and the run's data when its manifest says."""
    import json

    from edgedl.runtime.sidecar import read_sidecar

    source = ((read_sidecar(onnx) or {}).get("source") or {}).get("artifact")
    model = onnx.parent / source if source and (onnx.parent / source).is_file() else None
    data = "DATA"
    manifest = onnx.parent.parent / "manifest.json"
    if model is not None and manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))["recipe"]["data"]["spec"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    tail = " --quantize int8 --targets tensorrt" + (f" --device {device}" if device else "")
    onnx_route = f"edgedl compress --model {onnx} --data {data}{tail}"
    if model is None:
        return onnx_route
    return f"edgedl compress --model {model} --data {data}{tail} (or quantize this ONNX as it is: {onnx_route})"


def engine_path(onnx: Path, precision: str) -> Path:
    """Where an engine of ``onnx`` goes by default: beside it, named by the precision it is built in
    (``x.fp32.onnx`` built in FP16 is ``x.fp16.engine``)."""
    stem = onnx.name[: -len(onnx.suffix)] if onnx.suffix else onnx.name
    head, _, last = stem.rpartition(".")
    if head and last in ("fp32", "fp16", "int8", "bf16"):
        stem = head
    return onnx.with_name(f"{stem}.{precision}.engine")


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


def target(device: str | None, tensorrt: str | None = None, options: tp.BuildOptions | None = None):
    """What a plan is for, checked before any file is read: (profile, TensorRT version, JetPack release).

    Raises:
        UsageError: a device without TensorRT, or build options its TensorRT or hardware cannot build.
    """
    from edgedl.devices import named_profile

    profile = named_profile(device)
    trt = resolve(tensorrt, profile)
    release = profile.software.release() if profile is not None and profile.software else None
    if release and tensorrt is not None and version_key(release[1].tensorrt)[:2] != trt.key[:2]:
        # another TensorRT than the default JetPack's: the newest JetPack that ships it, if any
        ships = [(name, r) for name, r in profile.software.jetpack.items() if version_key(r.tensorrt)[:2] == trt.key[:2]]
        release = max(ships, key=lambda item: version_key(item[0])) if ships else None
    if options is not None:
        tp.check_options(options, trt, profile)
        check_precision(options.precision, profile)
    return profile, trt, release


def check_precision(precision: str | None, profile, fix: str = "build in one of those") -> None:
    """Refuse a precision the device does not run (the Jetson Nano's Maxwell GPU has no INT8)."""
    if profile is not None and precision not in (None, "auto") and precision not in profile.precisions:
        raise UsageError(f"{profile.title} does not run {precision} (it runs {', '.join(profile.precisions)}): {fix}")


def plan(onnx: str | Path, options: tp.BuildOptions, device: str | None = None, tensorrt: str | None = None,
         onnx_name: str | None = None, engine: str | None = None) -> dict:
    """The build plan of ``onnx`` for a device, without TensorRT: the lint for the TensorRT version the
    device (or ``tensorrt``) means, the ``edgedl build-engine`` and ``trtexec`` lines, the cache key."""
    from edgedl._fs import sha256_file
    from edgedl.devices import resolve_device
    from edgedl.formats.tensorrt.lint import lint

    profile, trt, release = target(device, tensorrt, options)
    model, precision, shapes = prepare(onnx, options, device)
    check_precision(precision, profile)  # auto: what the file holds
    report = lint(onnx, trt.version, profile=profile, dla=options.dla_core is not None,
                  input_shapes={k: v[2] for k, v in shapes.shapes.items()}, model=model, precision=precision)
    cc = profile.gpu.compute_capability if profile and profile.gpu else None
    if engine is None:  # beside the ONNX: in a run, the name (the script runs in artifacts/); else the path
        engine = engine_path(Path(onnx_name), precision).name if onnx_name else str(engine_path(Path(onnx), precision))
    return tp.make_plan(onnx_name or str(onnx), options, precision, trt, shapes, resolve_device(device), report,
                        sha256_file(onnx), cc, engine, device_software=device_software(profile, release, trt))


def device_software(profile, release, trt) -> dict | None:
    """What the device side of a plan needs: its platform, CUDA, Python and cuda-python, and whether
    edgedl itself can build and run there."""
    from edgedl.formats.tensorrt.versions import edgedl_on_device
    from edgedl.runtime.cuda_mem import cuda_python_spec
    from edgedl.runtime.platform import platform_name

    if profile is None:
        return None
    name, shipped = release if release else (None, None)
    l4t = shipped.l4t if shipped else None
    jetson = profile.kind == "jetson"
    note = None
    if jetson and shipped is None:
        note = (f"no JetPack in edgedl's {profile.name} profile ships TensorRT {trt.version}: the device's CUDA, Python "
                "and TensorRT platform are not known here")
    return {"jetpack": name, "l4t": l4t, "cuda": shipped.cuda if shipped else None,
            "python": shipped.python if shipped else None,
            "platform": None if jetson and not l4t else platform_name(profile.arch, l4t),  # a Jetson's follows JetPack
            "cuda_python": cuda_python_spec(shipped.cuda) if shipped else None,
            "edgedl_cannot_run": edgedl_on_device(shipped, trt), "note": note}


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
    from edgedl._fs import atomic_write_bytes, check_writable, sha256_file
    from edgedl.artifacts import write_sidecar
    from edgedl.devices import named_profile
    from edgedl.formats.tensorrt import build as tb
    from edgedl.formats.tensorrt.lint import lint
    from edgedl.runtime.sidecar import read_sidecar
    from edgedl.runtime.engine_guard import dla_fits
    from edgedl.runtime.tensorrt import running_facts

    options = options or tp.BuildOptions()
    onnx = Path(onnx)
    profile = named_profile(device)
    model, precision, profile_shapes = prepare(onnx, options, device)
    out = Path(out) if out else engine_path(onnx, precision)
    check_writable(out, "--out")  # beside the ONNX by default: a read-only folder is refused before the build
    facts = running_facts()  # imports TensorRT: one line naming where it comes from when it is missing
    trt = resolve(facts["tensorrt"])
    tp.check_options(options, trt, profile, on_jetson=facts["jetson"])
    no_dla = dla_fits(options.dla_core, None, facts["dla_cores"])
    if no_dla:
        raise UsageError(f"--dla {options.dla_core}: {no_dla}")
    shapes = {name: s[2] for name, s in profile_shapes.shapes.items()}
    report = lint(onnx, facts["tensorrt"], dla=options.dla_core is not None, input_shapes=shapes, model=model,
                  precision=precision)
    rejected = rejection(onnx.name, facts["tensorrt"], report["findings"])
    if rejected:
        raise EdgedlError(rejected)
    onnx_sha = sha256_file(onnx)
    key = tp.cache_key(onnx_sha, facts["tensorrt"], facts["compute_capability"], precision, options, profile_shapes)
    cached = cache_dir(cache) / f"{key[:32]}.engine"
    if use_cache and cached.is_file() and (read_sidecar(cached) or {}).get("cache_key") == key:
        if cached.resolve() != out.resolve():
            shutil.copyfile(cached, out.with_name(out.name + ".part"))
            out.with_name(out.name + ".part").replace(out)
        body = {k: v for k, v in read_sidecar(cached).items() if k not in SIDECAR_OWN_KEYS}
        return {**write_sidecar(out, "tensorrt", precision, body), "cached": True, "path": str(out)}
    source = onnx
    work = None
    if precision == "fp16" and trt.strongly_typed_only:  # no FP16 flag in 11: build a float16 ONNX strongly typed
        import tempfile

        from edgedl.formats.onnx.quantize import convert_fp16

        work = Path(tempfile.mkdtemp(prefix="edgedl-fp16-"))
        source = work / onnx.name
        convert_fp16(onnx, source)
    try:
        args = tb.loader_args(source, options, precision, trt, profile_shapes)
        if console is not None:
            console.print(f"building {out.name} with TensorRT {facts['tensorrt']} on {facts['gpu']} ({precision})")
        engine = tb.build(args)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    record = engine_record(engine, onnx, onnx_sha, facts, options, precision, profile_shapes, key,
                           report)  # reads the engine back before anything is written
    atomic_write_bytes(out, engine)
    body = {k: v for k, v in (read_sidecar(onnx) or {}).items() if k not in SIDECAR_OWN_KEYS}
    body.update(record)
    sidecar = write_sidecar(out, "tensorrt", precision, body)
    if use_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cached, engine)
        write_sidecar(cached, "tensorrt", precision, body)
    return {**sidecar, "cached": False, "path": str(out)}


def engine_record(engine: bytes, onnx: Path, onnx_sha: str, facts: dict, options: tp.BuildOptions, precision: str,
                  profile: tp.Profile, key: str, report: dict) -> dict:
    """What an engine's sidecar says beyond the ONNX's: how and where it was built, and its I/O.

    The engine is deserialized once, as the runtime will (host code allowed for a version-compatible
    plan, the DLA core set): its I/O, and proof that it loads.
    """
    from edgedl.runtime.tensorrt import deserialize, import_tensorrt

    trt = import_tensorrt()
    _, deserialized = deserialize(trt, engine, options.version_compatible, options.dla_core)
    if deserialized is None:
        raise EdgedlError(f"TensorRT built an engine of {onnx.name} that it cannot deserialize; rerun with --no-cache "
                          "and report it to NVIDIA with the ONNX")
    io = []
    for i in range(deserialized.num_io_tensors):
        name = deserialized.get_tensor_name(i)
        io.append({"name": name,
                   "mode": "input" if deserialized.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output",
                   "shape": [None if d < 0 else int(d) for d in deserialized.get_tensor_shape(name)],
                   "dtype": str(trt.nptype(deserialized.get_tensor_dtype(name)).__name__)})
    return {
        "tensorrt": {"version": facts["tensorrt"], "version_compatible": options.version_compatible,
                     "hardware_compatibility": "ampere+" if options.hardware_compatible else None,
                     "tf32": tp.tf32_for(options, precision), "parser_flags": tp.parser_flags(options, resolve(
                         facts["tensorrt"]))},
        "gpu": {"name": facts["gpu"], "compute_capability": facts["compute_capability"]},
        "platform": {k: facts[k] for k in ("platform", "jetson", "l4t")},
        "dla_core": options.dla_core,
        "sparsity": options.sparsity,
        "profile": {k: [list(x) for x in v] for k, v in profile.shapes.items()},
        "io": io,
        "source_onnx": {"name": onnx.name, "sha256": onnx_sha},
        "cache_key": key,
        "lint": report["counts"],
    }
