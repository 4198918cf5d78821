"""What an engine build takes, as data: options, profile shapes, the cache key, and the command lines
(``edgedl build-engine`` and ``trtexec``) that build it on the device.

Nothing here imports TensorRT: a workstation writes the plan, the Jetson runs it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgedl.errors import UsageError
from edgedl.formats.tensorrt.versions import TrtVersion

PRECISIONS = ("auto", "fp32", "fp16", "int8")


@dataclass(frozen=True)
class BuildOptions:
    """The build settings a user or a recipe chooses (everything else is TensorRT's default)."""

    precision: str = "auto"
    sparsity: bool = False
    dla_core: int | None = None
    batch: tuple[int, int, int] | None = None  # min, opt, max of a dynamic batch axis
    workspace_mb: int | None = None
    timing_cache: str | None = None
    version_compatible: bool = False
    hardware_compatible: bool = False  # TensorRT's "ampere+" level
    # TF32 for FP32 layers. TensorRT and trtexec allow it unless told (--noTF32), Polygraphy clears it
    # unless asked: edgedl says it on both lines, so the two build the same engine. None: off for an
    # fp32 build (an "fp32" engine computes in FP32), on for fp16 and int8 builds' leftover FP32 layers.
    tf32: bool | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision {self.precision}: use one of {', '.join(PRECISIONS)}")
        if self.batch is not None:
            low, opt, high = self.batch
            if not 1 <= low <= opt <= high:
                raise UsageError(f"--batch {low},{opt},{high}: needs 1 <= MIN <= OPT <= MAX")
        if self.dla_core is not None and self.dla_core < 0:
            raise UsageError(f"--dla {self.dla_core}: a DLA core is 0 or 1")
        if self.workspace_mb is not None and self.workspace_mb < 1:
            raise UsageError("--workspace must be at least 1 MB")


def parse_batch(text: str | None) -> tuple[int, int, int] | None:
    """``"1,4,8"`` -> (1, 4, 8); one number N means N,N,N (a static batch, which DLA needs)."""
    if not text:
        return None
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise UsageError(f"--batch '{text}' must be MIN,OPT,MAX (e.g. 1,4,8) or one number")
    return tuple(parts)  # type: ignore[return-value]


def onnx_precision(model) -> str:
    """What an ONNX file's own types say: int8 (Q/DQ nodes), fp16 (float16 weights) or fp32."""
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return "int8"
    if any(i.data_type == 10 for i in model.graph.initializer):  # TensorProto.FLOAT16
        return "fp16"
    return "fp32"


@dataclass
class Profile:
    """One optimization profile: min/opt/max shape per input."""

    shapes: dict[str, tuple[list[int], list[int], list[int]]] = field(default_factory=dict)
    dynamic_inputs: list[str] = field(default_factory=list)  # inputs whose ONNX batch axis is dynamic

    @property
    def dynamic(self) -> bool:
        """Whether the engine needs shapes given (an ONNX input with a dynamic axis)."""
        return bool(self.dynamic_inputs)


def profile_for(inputs: list, batch: tuple[int, int, int] | None) -> Profile:
    """Profile shapes from the ONNX inputs (name, dims with None/str for dynamic axes) and ``batch``.

    Raises:
        UsageError: a dynamic axis past the batch (the user must fix it in the ONNX or with --input-shape).
    """
    profile = Profile()
    for name, dims in inputs:
        unknown = [i for i, d in enumerate(dims) if not isinstance(d, int)]
        if [i for i in unknown if i != 0]:
            raise UsageError(f"input '{name}' has dynamic axes {unknown}; only the batch axis can be dynamic in a "
                             "build-engine profile: fix the others in the ONNX (compress --input-shape)")
        if not unknown:
            if batch and dims and batch != (dims[0],) * 3:
                raise UsageError(f"--batch {','.join(map(str, batch))}: input '{name}' has a fixed batch of {dims[0]}; "
                                 "export with a dynamic batch (stages.export_onnx.dynamic_batch: true)")
            profile.shapes[name] = (list(dims), list(dims), list(dims))
            continue
        low, opt, high = batch or (1, 1, 1)
        rest = list(dims[1:])
        profile.dynamic_inputs.append(name)
        profile.shapes[name] = ([low] + rest, [opt] + rest, [high] + rest)
    return profile


def resolve_precision(options: BuildOptions, model_precision: str, onnx_name: str, compress_hint: str) -> str:
    """The precision to build, checked against what the ONNX holds.

    Raises:
        UsageError: int8 asked of a float ONNX (TensorRT INT8 comes from Q/DQ nodes written by quantize).
    """
    asked = options.precision
    if asked == "auto":
        precision = model_precision
    elif asked == "int8" and model_precision != "int8":
        raise UsageError(f"--precision int8 needs a Q/DQ ONNX (explicit quantization); {onnx_name} has no Q/DQ nodes. "
                         f"Write one with: {compress_hint}")
    elif model_precision == "int8" and asked != "int8":
        raise UsageError(f"{onnx_name} is quantized (Q/DQ nodes): build it with --precision int8 or auto, or build "
                         "its fp32 parent for fp32/fp16")
    else:
        precision = asked
    if options.dla_core is not None and precision == "fp32":
        raise UsageError("DLA runs FP16 and INT8 only: give --precision fp16 or int8 with --dla")
    return precision


def typing_mode(precision: str, trt: TrtVersion, dla: bool = False) -> dict:
    """How a precision is asked of a TensorRT version.

    INT8 comes from Q/DQ nodes: strongly typed from 9.0 on, the INT8 flag before. FP16 uses the FP16
    builder flag where the version has it (before 11), and a float16 ONNX built strongly typed on 11.
    A DLA runs FP16 and INT8 only: before 11, INT8 for a DLA is built weakly typed with the INT8 and
    FP16 flags, so that the layers outside Q/DQ pairs run FP16 on the DLA instead of falling back to
    the GPU in FP32 (the route of NVIDIA's DLA samples and qdq-translator); 11 has no flags, and
    those layers stay FP32 on the GPU unless the ONNX itself types them float16.
    """
    if precision == "int8":
        if dla and not trt.strongly_typed_only:
            return {"strongly_typed": False, "flags": ["int8", "fp16"],
                    "onnx": "as is (Q/DQ; layers outside Q/DQ pairs in FP16 on the DLA)"}
        if trt.has_strong_typing:
            return {"strongly_typed": True, "flags": [], "onnx": "as is (Q/DQ)"}
        return {"strongly_typed": False, "flags": ["int8"], "onnx": "as is (Q/DQ)"}
    if precision == "fp16":
        if trt.strongly_typed_only:
            return {"strongly_typed": True, "flags": [], "onnx": "converted to float16 (keep float32 I/O)"}
        return {"strongly_typed": False, "flags": ["fp16"], "onnx": "as is (float32; FP16 flag)"}
    return {"strongly_typed": trt.has_strong_typing, "flags": [], "onnx": "as is"}


def tf32_for(options: BuildOptions, precision: str) -> bool:
    """Whether a build allows TF32: as asked, else off for fp32 and on (TensorRT's default) otherwise."""
    return options.tf32 if options.tf32 is not None else precision != "fp32"


def check_options(options: BuildOptions, trt: TrtVersion, profile=None, on_jetson: bool = False) -> None:
    """Refuse, in one line and before anything is written, what this TensorRT or device cannot build.

    Args:
        profile: the device profile the engine is for (None: unknown, or this machine).
        on_jetson: the build runs on a Jetson (this machine, when no profile says what the engine is for).

    Raises:
        UsageError: a flag the version lacks, hardware compatibility on a Jetson, a DLA the version or
            the device does not have.
    """
    asked = [flag for flag, on in (("--version-compatible", options.version_compatible),
                                   ("--hardware-compatible", options.hardware_compatible)) if on]
    if asked and not trt.has_compatibility_modes:
        raise UsageError(f"{' and '.join(asked)}: TensorRT {trt.version} has no version- or hardware-compatible "
                         "engines (they arrived in 8.6); drop the flag and build on the device that runs the engine")
    jetson = (profile is not None and profile.kind == "jetson") or on_jetson
    if options.hardware_compatible and jetson:
        where = profile.title if profile is not None else "this Jetson"
        raise UsageError(f"--hardware-compatible: hardware-compatibility levels apply to engines built on Ampere or "
                         f"newer discrete GPUs, not on JetPack ({where}); build on the Jetson that runs the engine")
    if options.dla_core is not None:
        missing = trt.dla_missing(profile)
        if missing:
            raise UsageError(f"--dla {options.dla_core}: {missing}; build for the GPU, or for a TensorRT with DLA")
        if profile is not None:
            dlas = sum(a.count for a in profile.accelerators if a.kind == "dla")
            if not dlas:
                raise UsageError(f"--dla {options.dla_core}: {profile.title} has no DLA; drop --dla (the GPU runs "
                                 "every layer)")
            if options.dla_core >= dlas:
                raise UsageError(f"--dla {options.dla_core}: {profile.title} has {dlas} DLA core(s), numbered 0 to "
                                 f"{dlas - 1}")


def trtexec_command(onnx: str, engine: str, options: BuildOptions, precision: str, trt: TrtVersion,
                    profile: Profile) -> list[str]:
    """The trtexec line that builds the same engine (JetPack ships it in /usr/src/tensorrt/bin).

    On TensorRT 11, FP16 of a float32 ONNX has no flag: the line names the float16 ONNX that
    ``edgedl build-engine`` would convert to (``fp16_onnx_name``), which the plan says how to make.
    """
    mode = typing_mode(precision, trt, options.dla_core is not None)
    if mode["onnx"].startswith("converted"):
        onnx = fp16_onnx_name(onnx)
    cmd = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}"]
    if mode["strongly_typed"] and not trt.strongly_typed_only:
        cmd.append("--stronglyTyped")  # always on in 11, where the flag is a no-op
    cmd += [f"--{flag}" for flag in mode["flags"]]
    if profile.dynamic:
        for key, index in (("minShapes", 0), ("optShapes", 1), ("maxShapes", 2)):
            cmd.append(f"--{key}=" + ",".join(f"{name}:{'x'.join(map(str, profile.shapes[name][index]))}"
                                              for name in profile.dynamic_inputs))
    if options.dla_core is not None:
        cmd += [f"--useDLACore={options.dla_core}", "--allowGPUFallback"]
    if options.sparsity:
        cmd.append("--sparsity=enable")
    if options.workspace_mb:  # 8.2's trtexec has --workspace (MB); --memPoolSize came in 8.4
        cmd.append(f"--memPoolSize=workspace:{options.workspace_mb}" if trt.has_memory_pools
                   else f"--workspace={options.workspace_mb}")
    if not tf32_for(options, precision):
        cmd.append("--noTF32")
    if options.timing_cache:
        cmd.append(f"--timingCacheFile={options.timing_cache}")
    # 8.6's trtexec sets the parser's NATIVE_INSTANCENORM itself for these (sampleEngines.cpp), 10.x by default
    if options.version_compatible:
        cmd.append("--versionCompatible")
    if options.hardware_compatible:
        cmd.append("--hardwareCompatibilityLevel=ampere+")
    return cmd


def fp16_onnx_name(onnx: str) -> str:
    return onnx[:-5] + ".fp16.onnx" if onnx.endswith(".onnx") else onnx + ".fp16.onnx"


def build_engine_command(onnx: str, engine: str, options: BuildOptions) -> list[str]:
    """The ``edgedl build-engine`` line for the same build."""
    cmd = ["edgedl", "build-engine", onnx, "--out", engine, "--precision", options.precision]
    if options.dla_core is not None:
        cmd += ["--dla", str(options.dla_core)]
    if options.sparsity:
        cmd.append("--sparsity")
    if options.batch:
        cmd += ["--batch", ",".join(map(str, options.batch))]
    if options.workspace_mb:
        cmd += ["--workspace", str(options.workspace_mb)]
    if options.timing_cache:
        cmd += ["--timing-cache", options.timing_cache]
    if options.version_compatible:
        cmd.append("--version-compatible")
    if options.hardware_compatible:
        cmd.append("--hardware-compatible")
    if options.tf32 is not None:
        cmd.append("--tf32" if options.tf32 else "--no-tf32")
    return cmd


def cache_key(onnx_sha256: str, tensorrt_version: str, compute_capability: str | None, precision: str,
              options: BuildOptions, profile: Profile) -> str:
    """sha256 of every input that changes the engine. The timing cache speeds a build up without
    changing what a build may choose, and the workspace bounds tactics: the latter counts, the former not."""
    data = {"onnx": onnx_sha256, "tensorrt": tensorrt_version, "compute_capability": compute_capability,
            "precision": precision, "dla_core": options.dla_core, "sparsity": options.sparsity,
            "profile": {k: [list(x) for x in v] for k, v in sorted(profile.shapes.items())},
            "workspace_mb": options.workspace_mb, "version_compatible": options.version_compatible,
            "hardware_compatible": options.hardware_compatible, "tf32": tf32_for(options, precision)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def shell(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def make_plan(onnx_name: str, options: BuildOptions, precision: str, trt: TrtVersion, profile: Profile,
              device: dict | None, lint: dict, onnx_sha256: str, compute_capability: str | None,
              engine: str | None = None, device_software: dict | None = None) -> dict:
    """The build plan a Jetson runs: the ONNX name, both command lines, the cache key and the lint.

    ``device_software`` (the target's JetPack, CUDA, Python, cuda-python and platform) says whether the
    ``edgedl build-engine`` line can run there at all; where it cannot, ``commands.edgedl`` is None and
    the trtexec line is the way.
    """
    engine = engine or Path(onnx_name).with_suffix("").name + ".engine"
    mode = typing_mode(precision, trt, options.dla_core is not None)
    software = device_software or {}
    cannot = software.get("edgedl_cannot_run")
    plan = {
        "edgedl_build_plan": 2,
        "onnx": onnx_name,
        "onnx_sha256": onnx_sha256,
        "engine": engine,
        "tensorrt": trt.as_dict(),
        "device": device,
        "device_software": device_software,
        "precision": precision,
        "typing": mode,
        "parser_flags": parser_flags(options, trt),
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()},
        "profile": {k: [list(x) for x in v] for k, v in profile.shapes.items()},
        "cache_key": cache_key(onnx_sha256, trt.version, compute_capability, precision, options, profile),
        "cache_key_inputs": "sha256 of the ONNX, TensorRT version, compute capability, precision, DLA core, "
                            "sparsity, profile shapes, workspace, TF32 and compatibility flags",
        "commands": {
            "edgedl": None if cannot else shell(build_engine_command(onnx_name, engine, options)),
            "trtexec": shell(trtexec_command(onnx_name, engine, options, precision, trt, profile)),
        },
        "edgedl_cannot_run": cannot,
        "lint": {"passed": lint["passed"], "counts": lint["counts"], "findings": lint["findings"]},
        "trtexec_needs": (f"{fp16_onnx_name(onnx_name)}: TensorRT {trt.version} has no FP16 flag; make the float16 "
                          "ONNX with a quantize stage (precision: fp16), or use the edgedl line, which converts it"
                          if mode["onnx"].startswith("converted") else None),
        "run_on_device": ("copy the .onnx and its .json sidecar to the device and run one of the commands there "
                          "(TensorRT engines do not move between GPUs, platforms or TensorRT versions). "
                          + ("" if cannot else "edgedl build-engine pins the engine it builds; ")
                          + "an engine trtexec builds has no edgedl sidecar, so edgedl's runtime does not load it"
                          + (f"; edgedl on the device needs {software['cuda_python']} for CUDA {software['cuda']}"
                             if software.get("cuda_python") and not cannot else "")),
    }
    return plan


def parser_flags(options: BuildOptions, trt: TrtVersion) -> list[str]:
    """The ONNX parser flags a build sets beyond the version's defaults (names of ``trt.OnnxParserFlag``)."""
    return trt.parser_flags_for_compatibility if options.version_compatible or options.hardware_compatible else []
