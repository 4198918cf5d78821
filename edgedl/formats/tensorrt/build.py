"""Engine builds through Polygraphy's TensorRT loaders: edgedl maps its options onto them, nothing more.

Polygraphy (NVIDIA's own tool, pure Python) already absorbs the API differences between TensorRT
8.6, 10 and 11: strongly typed networks, DLA with GPU fallback, sparse weights, timing caches,
optimization profiles, version and hardware compatibility. ``loader_args`` is the mapping, as data;
``loaders`` turns it into Polygraphy loader objects (building them imports no TensorRT); ``build``
runs them, which needs TensorRT: JetPack on a Jetson, NVIDIA's package index elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgedl.errors import EdgedlError, MissingDependencyError
from edgedl.formats.tensorrt.plan import BuildOptions, Profile, parser_flags, tf32_for, typing_mode
from edgedl.formats.tensorrt.versions import TrtVersion
from edgedl.runtime.tensorrt import import_tensorrt


def import_polygraphy():
    try:
        from polygraphy.backend import trt as poly_trt
    except ImportError:
        raise MissingDependencyError("polygraphy", "tensorrt", "Building TensorRT engines") from None
    return poly_trt


def loader_args(onnx: str | os.PathLike, options: BuildOptions, precision: str, trt: TrtVersion,
                profile: Profile, save_timing_cache: str | None = None) -> dict:
    """The Polygraphy loader arguments for a build, as plain data (tested without TensorRT).

    TF32 is passed as decided (Polygraphy's CreateConfig clears it unless ``tf32=True``; trtexec keeps
    it unless ``--noTF32``), so the edgedl and trtexec lines of a plan build the same engine.
    """
    mode = typing_mode(precision, trt, options.dla_core is not None)
    config = {
        "tf32": tf32_for(options, precision) or None,
        "fp16": "fp16" in mode["flags"] or None,
        "int8": "int8" in mode["flags"] or None,
        "sparse_weights": options.sparsity or None,
        "load_timing_cache": options.timing_cache,
        "version_compatible": options.version_compatible or None,
        "use_dla": options.dla_core is not None or None,
        "allow_gpu_fallback": options.dla_core is not None or None,
    }
    return {
        # Names of trt.OnnxParserFlag to set; Polygraphy replaces the parser's flags with the list, so
        # it is passed only where the version's defaults lack one (8.6's NATIVE_INSTANCENORM).
        "network": {"path": str(onnx), "strongly_typed": mode["strongly_typed"] or None,
                    "parser_flags": parser_flags(options, trt)},
        "config": {k: v for k, v in config.items() if v is not None},
        "profile": {name: [tuple(s) for s in shapes] for name, shapes in profile.shapes.items()},
        # Set on the IBuilderConfig at build time: they need TensorRT's enums.
        "postprocess": {"dla_core": options.dla_core,
                        "workspace_bytes": options.workspace_mb * 2**20 if options.workspace_mb else None,
                        "hardware_compatibility": "AMPERE_PLUS" if options.hardware_compatible else None},
        "save_timing_cache": save_timing_cache or options.timing_cache,
    }


def loaders(args: dict):
    """Polygraphy loaders for ``args``: a callable that returns the serialized engine."""
    poly = import_polygraphy()
    flags = args["network"].get("parser_flags")
    if flags:  # the enum needs TensorRT, which a build with such flags has
        trt = import_tensorrt()
        flags = [getattr(trt.OnnxParserFlag, name) for name in flags]
    network = poly.NetworkFromOnnxPath(args["network"]["path"], flags=flags or None,
                                       strongly_typed=args["network"].get("strongly_typed"))
    profiles = []
    if args["profile"]:
        profile = poly.Profile()
        for name, (low, opt, high) in args["profile"].items():
            profile.add(name, min=low, opt=opt, max=high)
        profiles.append(profile)
    config = poly.CreateConfig(profiles=profiles or None, **args["config"])
    post = args["postprocess"]
    if any(v is not None for v in post.values()):
        config = poly.PostprocessConfig(config, _postprocess(post))
    return poly.EngineBytesFromNetwork(network, config=config, save_timing_cache=args["save_timing_cache"])


def _postprocess(post: dict):
    def apply(builder, network, config):
        trt = import_tensorrt()
        if post["dla_core"] is not None:
            config.DLA_core = int(post["dla_core"])  # Polygraphy's use_dla picks core 0
        if post["workspace_bytes"]:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(post["workspace_bytes"]))
        if post["hardware_compatibility"]:
            config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, post["hardware_compatibility"])
    return apply


def parser_errors(onnx: str | os.PathLike) -> list[str]:
    """What TensorRT's ONNX parser says about each node it rejects: node, op and why."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx)):
        return []
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        name = err.node_name() if hasattr(err, "node_name") else str(err.node())
        op = err.node_operator() if hasattr(err, "node_operator") else "?"
        out.append(f"node {name} ({op}): {err.desc()}")
    return out


def build(args: dict) -> bytes:
    """Build the engine ``args`` describes; parser failures name each node."""
    import_tensorrt()
    engine_bytes = loaders(args)
    try:
        return bytes(engine_bytes())
    except Exception as exc:
        errors = []
        try:
            errors = parser_errors(args["network"]["path"])
        except Exception:
            pass
        detail = "; ".join(errors) if errors else (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise EdgedlError(f"TensorRT could not build {Path(args['network']['path']).name}: {detail}") from None
