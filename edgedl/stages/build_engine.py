"""The ``build_engine`` stage (the ``tensorrt`` target): lint the ONNX for the device's TensorRT, write
the build plan the device runs, and build the engine here when this machine is the device.

TensorRT engines are built where they run: they do not move between GPU architectures or TensorRT
versions. For a Jetson target the run directory gets ``tensorrt/``: the plan (JSON), and
``build_on_device.sh`` with the ``edgedl build-engine`` and ``trtexec`` lines.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from edgedl.errors import StageError
from edgedl.stages.base import RunContext, Stage, StageConfig


class BuildEngineConfig(StageConfig):
    """Lint for TensorRT, write the on-device build plan, build the engine where this machine is the device."""

    stage: Literal["build_engine"]
    precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        "auto", description="auto: the INT8 (Q/DQ) ONNX when quantize made one for TensorRT, else the fp32 ONNX")
    tensorrt: Optional[str] = Field(None, description="TensorRT version to lint and plan for; default: the device "
                                                      "profile's newest JetPack, else the latest 10.x")
    dla_core: Optional[int] = Field(None, ge=0, description="build for this DLA core, with GPU fallback")
    sparsity: bool = Field(False, description="let TensorRT use 2:4 sparse kernels (after a sparsify stage)")
    batch: Optional[list[int]] = Field(None, description="[min, opt, max] of a dynamic batch axis; default 1")
    workspace_mb: Optional[int] = Field(None, ge=1)
    version_compatible: bool = False
    hardware_compatible: bool = Field(False, description="ampere+ engines: discrete Ampere or newer GPUs, not Jetson")
    tf32: Optional[bool] = Field(None, description="let FP32 layers use TF32; default: off for an fp32 build, on "
                                                   "for fp16 and int8 builds (TensorRT's default)")
    on_lint_error: Literal["fail", "warn"] = "fail"
    build: Literal["auto", "never"] = Field(
        "auto", description="auto: build here when TensorRT imports and the recipe's device is this machine")

    @field_validator("batch")
    @classmethod
    def _three(cls, value):
        if value is not None and (len(value) not in (1, 3) or min(value) < 1):
            raise ValueError("batch is [min, opt, max] (or [n]), each at least 1")
        return value


class BuildEngineStage(Stage):
    name = "build_engine"
    Config = BuildEngineConfig
    target = "tensorrt"
    serves = ("tensorrt",)
    requires = ("export_onnx",)

    def options(self):
        from edgedl.formats.tensorrt import plan as tp

        c = self.config
        batch = tuple(c.batch * 3 if len(c.batch) == 1 else c.batch) if c.batch else None
        return tp.BuildOptions(precision=c.precision, sparsity=c.sparsity, dla_core=c.dla_core, batch=batch,
                               workspace_mb=c.workspace_mb, version_compatible=c.version_compatible,
                               hardware_compatible=c.hardware_compatible, tf32=c.tf32)

    def constraints(self, recipe) -> dict:
        from edgedl.formats.tensorrt.engine import target

        _, trt, _ = target(recipe.device, self.config.tensorrt)
        low, high = trt.entry()["opset"]
        return {"onnx_opset": (low, high, f"TensorRT {trt.version} ({trt.why})")}

    def check(self, recipe, constraints: dict) -> None:
        """The device has TensorRT, its TensorRT and hardware build what the options ask, and it runs the
        precision (auto: INT8 when a quantize stage writes it)."""
        from edgedl.formats.tensorrt.engine import check_precision, target

        profile, _, _ = target(recipe.device, self.config.tensorrt, self.options())
        if self.config.precision == "auto" and any(s.stage == "quantize" and s.precision == "int8" or s.stage == "qat"
                                                   for s in recipe.stages):
            check_precision("int8", profile, "quantize to fp16 (--quantize fp16, or stages.quantize.precision=fp16)")

    def run(self, ctx: RunContext) -> None:
        from edgedl._fs import atomic_write_json, atomic_write_text
        from edgedl.formats.tensorrt.engine import plan as make_plan, rejection
        from edgedl.formats.tensorrt.lint import Finding

        c = self.config
        record = self._source(ctx)
        onnx = ctx.run.artifact_path(record)
        device = ctx.device.record
        options = self.options()
        plan = make_plan(onnx, options, ctx.recipe.device, c.tensorrt, onnx_name=record["name"])
        findings, version, precision = plan["lint"]["findings"], plan["tensorrt"]["version"], plan["precision"]
        for f in findings:
            if f["severity"] in ("warning", "gpu_fallback"):
                ctx.log(f"tensorrt lint: {Finding(**f).line()}")
        rejected = rejection(record["name"], version, findings)
        if rejected:
            if c.on_lint_error == "fail":
                raise StageError(rejected + "; see `edgedl inspect FILE --target tensorrt` for every finding")
            ctx.run.manifest["notes"].append(rejected)
        folder = ctx.run.path / "tensorrt"
        folder.mkdir(exist_ok=True)
        stem = record["name"].removesuffix(".onnx")
        atomic_write_json(folder / f"{stem}.plan.json", plan)
        atomic_write_text(folder / "build_on_device.sh", script(plan))
        (folder / "build_on_device.sh").chmod(0o755)
        built = self._build_here(ctx, onnx, plan["engine"], options, device) if c.build == "auto" else None
        ctx.run.manifest.setdefault("tensorrt", []).append(
            {"onnx": record["name"], "plan": f"tensorrt/{stem}.plan.json", "script": "tensorrt/build_on_device.sh",
             "precision": precision, "tensorrt": plan["tensorrt"], "lint": plan["lint"]["counts"], "built_here": built})
        ctx.run.save()
        ctx.log(f"tensorrt: plan for {record['name']} ({precision}, TensorRT {version}) in {folder.name}/; on the "
                f"device run: {plan['commands']['trtexec']}")

    def _source(self, ctx: RunContext) -> dict:
        artifacts = [a for a in ctx.run.manifest["artifacts"] if a["format"] == "onnx"]
        want = self.config.precision
        quantized = [a for a in artifacts if a["precision"] == "int8"]
        if want in ("auto", "int8") and quantized:
            return quantized[-1]
        if want == "int8":
            raise StageError("build_engine precision int8 needs an INT8 ONNX: add a quantize stage (precision: int8) "
                             "or a qat stage before build_engine")
        fp16 = [a for a in artifacts if a["precision"] == "fp16"]
        if want in ("auto", "fp16") and fp16 and not quantized:
            return fp16[-1]
        fp32 = [a for a in artifacts if a["precision"] == "fp32"]
        if not fp32:
            raise StageError("build_engine needs an ONNX artifact: put export_onnx before build_engine")
        return fp32[-1]

    def _build_here(self, ctx: RunContext, onnx, engine: str, options, device: dict) -> dict | None:
        """Build the engine when this machine is the device and has TensorRT; otherwise say why not."""
        import importlib.util

        if device.get("on_device") is False:
            return {"built": False, "why": f"the recipe's device is {device['name']}, not this machine: build on the "
                                          "device with tensorrt/build_on_device.sh"}
        if importlib.util.find_spec("tensorrt") is None:
            return {"built": False, "why": "TensorRT is not installed on this machine"}
        from edgedl.formats.tensorrt.engine import build_engine
        from edgedl.runtime import engine_guard
        from edgedl.runtime.sidecar import SIDECAR_OWN_KEYS

        out = ctx.run.tempdir() / engine
        sidecar = build_engine(onnx, out, options, console=ctx.console)
        engine_guard.add_trusted(out)  # built by this run on this machine: the user's own engine
        body = {k: v for k, v in sidecar.items() if k not in SIDECAR_OWN_KEYS + ("cached", "path")}
        ctx.run.add_artifact(out, name=out.name, format="tensorrt", precision=sidecar["precision"], stage=self.name,
                             parent=onnx.name, sidecar=body)
        return {"built": True, "engine": out.name, "cached": sidecar["cached"]}


def script(plan: dict) -> str:
    """A shell script that builds the plan's engine on the device, from the run's artifacts folder.

    Where edgedl cannot run on the device (JetPack 4 and 5 ship Python 3.6 and 3.8), trtexec builds it.
    """
    software = plan.get("device_software") or {}
    head = [
        "#!/bin/sh",
        f"# Build {plan['engine']} on the device (TensorRT {plan['tensorrt']['version']}, {plan['precision']}).",
        "# TensorRT engines do not move between GPUs, platforms or TensorRT versions: run this where the engine will run.",
        f"# Cache key of this build: {plan['cache_key']}",
        "set -e",
        'cd "$(dirname "$0")/../artifacts"',
    ]
    if plan["commands"]["edgedl"] is None:
        return "\n".join(head + [
            f"# edgedl cannot run on this device: {plan['edgedl_cannot_run']}.",
            "# trtexec comes with JetPack (/usr/src/tensorrt/bin); run the engine with trtexec --loadEngine or your "
            "own TensorRT code.",
            plan["commands"]["trtexec"],
            "",
        ])
    pip = f"pip install 'edgedl[tensorrt]' '{software['cuda_python']}'" if software.get("cuda_python") \
        else "pip install 'edgedl[tensorrt]'"
    return "\n".join(head + [
        "# With edgedl on the device: JetPack's TensorRT is in the system Python, so make the venv with",
        f"#   python3 -m venv --system-site-packages ~/edgedl && . ~/edgedl/bin/activate && {pip}",
        "# build-engine pins the engine it builds in the device's trust file (edgedl trust list shows it).",
        plan["commands"]["edgedl"],
        "# Or with trtexec alone (JetPack ships it in /usr/src/tensorrt/bin). Its engine has no edgedl sidecar, so",
        "# edgedl's runtime does not load it: run it with trtexec --loadEngine or your own TensorRT code.",
        "# " + plan["commands"]["trtexec"],
        "",
    ])
