"""The Python API the CLI calls: compress, train, bench, inspect."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgedl._fs import check_writable
from edgedl.artifacts import model_kwargs
from edgedl.devices import Device, named_profile
from edgedl.errors import EdgedlError, StageError, TrustError, UsageError
from edgedl.models.spec import check_spec
from edgedl.recipe import Recipe, load_recipe


@dataclass
class CompressResult:
    """What ``compress`` returns: the run directory, its manifest and the artifacts by name."""

    path: Path
    manifest: dict

    @property
    def status(self) -> str:
        return self.manifest["status"]

    @property
    def artifacts(self) -> dict[str, dict]:
        return {a["name"]: a for a in self.manifest["artifacts"]}

    def artifact_path(self, name: str) -> Path:
        """The file of the artifact called ``name``."""
        return self.path / self.artifacts[name]["path"]


def check_trust(recipe: Recipe, trust_model_code: bool, named: str | tuple | None = None) -> None:
    """Refuse the Python a recipe file names (factories, a data function) unless the user said to run it.

    What a user names on the command line (``named``: ``--model``, ``--data``) or in a Recipe built
    in Python is theirs to run; code that a recipe file names is code a file chose, like a
    checkpoint's.
    """
    from edgedl.data.source import is_code_spec
    from edgedl.models.spec import is_factory_spec

    named = named if isinstance(named, tuple) else (named,)
    found = [("model", recipe.model.spec, "--model")]
    found += [(f"stages.{s.stage}.teacher", s.teacher, "--model") for s in recipe.stages if getattr(s, "teacher", None)]
    for field, spec, flag in found:
        if is_factory_spec(spec) and not trust_model_code and spec not in named:
            raise TrustError(f"the recipe's {field} is the Python factory '{spec}', and edgedl does not run code a "
                             "file names: pass --trust-model-code if you trust it, or name it yourself with "
                             f"{flag} {spec}")
    for stage in recipe.stages:
        metric = getattr(stage, "metric", None)
        if isinstance(metric, str) and metric and not trust_model_code and metric not in named:
            raise TrustError(f"the recipe's stages.{stage.stage}.metric is the Python function '{metric}', and edgedl "
                             "does not run code a file names: pass --trust-model-code if you trust it")
    if is_code_spec(recipe.data.spec) and not trust_model_code and recipe.data.spec not in named:
        raise TrustError(f"the recipe's data is the Python function '{recipe.data.spec}', and edgedl does not run code "
                         f"a file names: pass --trust-model-code if you trust it, or name it yourself with --data "
                         f"{recipe.data.spec}")


def _check_model_file(recipe: Recipe, stages: list, trust_model_code: bool = False) -> list | None:
    """Checks on the model that need no data, through its importer: the file exists, reads and is
    what it says, code it would run is trusted, its --input-shape names fit, and no stage needs
    what the form cannot give (pruning needs a Python module). Returns the model's own inputs
    (TensorInfos) when the form declares them without loading (ONNX)."""
    from edgedl.models.importers import importer_for

    spec = recipe.model.spec
    importer = importer_for(spec)
    kind = importer.module
    refused = [s for s in stages if s.needs_torch and kind not in s.modules]
    if refused and kind is None:
        raise UsageError(f"stage(s) {', '.join(s.name for s in refused)} need a PyTorch model; '{Path(spec).name}' is an "
                         "ONNX file, which can be quantized, evaluated and benchmarked: drop those stages (or --prune, "
                         "--distill, --epochs, the tflite target) or pass the PyTorch model"
                         + "".join(f"; {s.needs_torch}" for s in refused if isinstance(s.needs_torch, str)))
    if refused:
        raise UsageError(f"stage(s) {', '.join(s.name for s in refused)} cannot take '{Path(spec).name}': "
                         f"{importer.cannot}")
    if importer.name == "onnx":
        if recipe.model.weights:
            raise UsageError(f"--weights goes with an architecture; {Path(spec).name} is an ONNX file with its own weights")
        return importer.inputs(spec, dict(recipe.model.input_shapes))
    if recipe.model.input_shapes:
        raise UsageError("model.input_shapes (--input-shape) applies to .onnx models; torch models take "
                         "their shapes from the data")
    importer.check(spec, trust=trust_model_code, weights=recipe.model.weights)
    return None


def load_data_and_model(recipe: Recipe, inputs: list | None, trust_model_code: bool = False):
    """The dataset and the model. A model whose file fixes its architecture (TorchScript, .pt2, a
    Hugging Face folder) opens first, so the data is shaped and tokenized for its own inputs; one
    built from options (a registry name, a factory) is shaped for the data."""
    from edgedl.data import load_dataset
    from edgedl.models.importers import importer_for

    options = {"seed": recipe.seed, "val_fraction": recipe.data.val_fraction,
               "test_fraction": recipe.data.test_fraction}
    if importer_for(recipe.model.spec).name in ("torchscript", "pt2", "hf"):
        model = build_model(recipe, None, trust_model_code)
        hf = model.hf or {}
        dataset = load_dataset(recipe.data.spec, inputs=model.inputs, tokenizer=hf.get("tokenizer"),
                               normalization=hf.get("normalization"), classes=hf.get("labels"), **options)
        return dataset, model
    dataset = load_dataset(recipe.data.spec, inputs=inputs, **options)
    return dataset, build_model(recipe, dataset, trust_model_code)


TARGET_BACKENDS = {"onnx": "onnxruntime", "tflite": "litert", "tensorrt": "onnxruntime"}  # what bench runs per target


def check_device(on: str, reach: dict, recipe: Recipe) -> dict:
    """Before any work, the device a run's benchmark stage goes to: reachable over SSH, edgedl there,
    and the backends the run's targets are benched with. Returns what the device says of itself."""
    from edgedl.bench.executors import executor_for, scheme_of
    from edgedl.errors import DeviceError

    if scheme_of(on) != "ssh":
        raise UsageError(f"--on {on}: compress runs its benchmark stage on SSH devices (ssh://host or a host alias); "
                         "bench a phone's .tflite with edgedl bench --on adb://SERIAL")
    executor = executor_for(on, **reach)
    facts = executor.check()
    if any(cfg.stage == "benchmark" for cfg in recipe.stages):
        have = facts.get("backends") or {}
        for target in recipe.targets:
            backend = TARGET_BACKENDS.get(getattr(target, "value", target))
            if backend in have and have[backend] is None:
                raise DeviceError(f"{executor.label}: {executor.host} has edgedl {facts.get('edgedl')} but not the "
                                  f"{backend} backend the {getattr(target, 'value', target)} target is benched with: "
                                  "install it there (pip install 'edgedl[onnx]' or 'edgedl[litert]')")
    return facts


def build_model(recipe: Recipe, dataset, trust_model_code: bool = False) -> Any:
    """The recipe's model, shaped for the dataset unless the recipe's kwargs say otherwise.

    The seed is set first, so the same recipe starts from the same initial weights.
    """
    from edgedl.models import load_model
    from edgedl.models.importers import importer_for
    from edgedl.train import seed_everything

    if importer_for(recipe.model.spec).module is None:
        return None  # an ONNX model has no torch module; export_onnx brings the file in itself
    seed_everything(recipe.seed)
    kwargs = model_kwargs(dataset, recipe.model.kwargs) if dataset is not None else dict(recipe.model.kwargs)
    return load_model(recipe.model.spec, trust_model_code=trust_model_code, weights=recipe.model.weights, **kwargs)


def compress(
    recipe: Recipe | str | Path,
    out: str | Path | None = None,
    force: bool = False,
    overrides: list[str] | None = None,
    console: Any = None,
    progress: bool = True,
    trust_model_code: bool = False,
    on: str | None = None,
    reach: dict | None = None,
) -> CompressResult:
    """Run a recipe's stages into a run directory.

    Everything that can be checked without data is checked before any work (and before a run
    directory exists). A stage that fails marks itself failed in the manifest, keeps the
    artifacts of earlier stages, writes the report, and raises :class:`StageError`.

    Args:
        trust_model_code: run Python code that files name: factories a recipe file names, and
            factories that checkpoints name. A factory in a Recipe built in Python runs without it
            (its author named the code); a checkpoint's factory never does.
        on: where the benchmark stage runs (``ssh://host``, a host alias; default here), checked
            before any work; ``reach`` holds the executor's options (ssh_config, accept_new_host, ...).
    """
    from edgedl import report
    from edgedl.run import RunDir, default_run_dir
    from edgedl.stages import RunContext, stage_for

    from_file = not isinstance(recipe, Recipe)
    if from_file:
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise UsageError("overrides apply to recipe files; edit the Recipe object instead")
    check_spec(recipe.model.spec)  # an unknown name or a missing file: at once, before torch is imported
    check_trust(recipe, trust_model_code or not from_file)
    stages = [stage_for(cfg) for cfg in recipe.stages]  # unknown stages fail before any work
    constraints: dict = {}
    for stage in stages:
        constraints.update(stage.constraints(recipe))
    for stage in stages:
        stage.check(recipe, constraints)
    inputs = _check_model_file(recipe, stages, trust_model_code)
    facts = check_device(on, reach or {}, recipe) if on and on != "local" else None
    device = Device.resolve(recipe.device, on, reach, facts)  # once per run: the stages take this object
    out = Path(out) if out else default_run_dir(recipe)
    check_writable(out, "--out", folder=True)  # /proc, a read-only mount: refused now, not after training
    RunDir.is_free(out, force)  # refuse an existing run before spending time on data and model
    dataset, model = load_data_and_model(recipe, inputs, trust_model_code)
    run = RunDir(out, recipe, force=force, device=device.record)
    run.manifest["notes"].extend(dataset.notes)
    if model is not None:
        run.manifest["notes"].extend(model.notes)
    from edgedl.models.importers import importer_for

    from_registry = importer_for(recipe.model.spec).name == "registry" and not recipe.model.weights
    if from_registry and not any(cfg.stage == "train" for cfg in recipe.stages):
        run.manifest["notes"].append(f"'{recipe.model.spec}' comes from the registry and is not trained in this "
                                     "run: its weights are random, so accuracy is meaningless")
    ctx = RunContext(recipe=recipe, run=run, dataset=dataset, model=model, console=console, progress=progress,
                     trust_model_code=trust_model_code, constraints=constraints, device=device)
    status = "failed"
    try:
        for index, stage in enumerate(stages):
            record = run.stage_started(stage.name, index)
            start = time.perf_counter()
            try:
                stage.run(ctx)
            except BaseException as exc:
                message = str(exc) if isinstance(exc, EdgedlError) else f"{type(exc).__name__}: {exc}"
                if isinstance(exc, KeyboardInterrupt):
                    message = "interrupted"
                run.stage_finished(record, time.perf_counter() - start, error=message,
                                   measured=getattr(exc, "measured", None))
                if isinstance(exc, EdgedlError):
                    raise StageError(f"stage '{stage.name}' failed: {exc}") from exc
                raise
            run.stage_finished(record, time.perf_counter() - start)
        status = "complete"
    finally:
        run.explain_missing()
        run.finish(status)
        run.cleanup()
        report.write(run.path, run.manifest)
        if console is not None:
            report.show(console, run.manifest)
            console.print(f"run directory: {run.path}")
    return CompressResult(run.path, run.manifest)


def train(
    model: str,
    data: str,
    out: str | Path,
    epochs: int = 10,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    console: Any = None,
    progress: bool = True,
    trust_model_code: bool = False,
) -> dict:
    """Train a model spec on a data spec and write an edgedl checkpoint (and its sidecar) to ``out``.

    The checkpoint opens with every command that takes one: ``bench``, ``inspect``,
    ``edgedl.runtime.load`` and ``compress --model out.pt``.
    """
    from edgedl.artifacts import checkpoint_sidecar, task_of, with_tokenizer_beside, write_sidecar
    from edgedl.formats.torch.progress import progress_bar
    from edgedl.models import save_checkpoint
    from edgedl.models.spec import CHECKPOINT_SUFFIXES
    from edgedl.recipe import validate_recipe
    from edgedl.train import FitConfig, accuracy, fit

    out = Path(out)
    if out.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UsageError(f"--out {out}: edgedl train writes a PyTorch checkpoint, so name it .pt; for ONNX or "
                         f"TFLite files run `edgedl compress --model {out.with_suffix('.pt').name} --data {data}` next")
    check_writable(out, "--out")
    recipe = validate_recipe({"model": model, "data": data, "seed": seed, "targets": [],
                              "stages": [{"stage": "train", "epochs": epochs, "lr": lr, "batch_size": batch_size}]},
                             source="train options")
    if model.lower().endswith(".onnx"):
        raise UsageError(f"edgedl train needs a PyTorch model; '{model}' is an ONNX file")
    check_spec(model)
    from edgedl.stages import stage_for

    _check_model_file(recipe, [stage_for(cfg) for cfg in recipe.stages], trust_model_code)
    dataset, built = load_data_and_model(recipe, None, trust_model_code)
    task = task_of(built.hf)
    if task == "embedding":
        raise UsageError("an embedding model learns from pairs or contrasts with its own training code; edgedl trains "
                         "classifiers and autoencoders")
    with progress_bar(console, enabled=progress) as bar:
        result = fit(built.module, dataset.train, dataset.val,
                     FitConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed), progress=bar,
                     task=task)
    save_checkpoint(out, built.module, built.arch, data=data, seed=seed, best_epoch=result.best_epoch,
                    val_accuracy=result.best_val_accuracy, input_shape=list(dataset.input_shape))
    info = with_tokenizer_beside(built.hf, out.parent, out.stem) if built.hf else None  # as a run does
    write_sidecar(out, "torch", "fp32", checkpoint_sidecar(built.module, dataset, model, built.inputs, info))
    return {"checkpoint": str(out), "best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy,
            "test_accuracy_torch": accuracy(built.module, dataset.test)}


def bench(
    artifact: str | Path,
    data: str | None = None,
    runs: int = 100,
    warmup: int = 10,
    min_seconds: float = 1.0,
    batch: int = 1,
    threads: int | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    trust_model_code: bool = False,
    device: str | None = None,
    energy: str = "auto",
    sysfs_root: str | Path = "/",
    rails: list[str] | None = None,
    idle_seconds: float = 2.0,
    cpus: list[int] | None = None,
    backend: str | None = None,
    compute: str | None = None,
    profile_ops: bool = False,
    until_stable: float | None = None,
    sustained: float | None = None,
    cooldown: float = 0.0,
) -> dict:
    """Measure an artifact's cold start, latency (with intervals), throughput, memory and energy
    through edgedl.runtime, with the conditions and the flags that say whether to trust them.

    Feeds come from ``data`` (its test split, arrays keyed by input name for multi-input models)
    or are random arrays shaped by the model and ``input_shapes``; a dynamic dimension past the
    batch that neither gives is a usage error, never a silent 1.

    Args:
        device: a device profile name (``edgedl devices list``): the device the figures are for.
            Unless this machine is that device, the result says the timings are this host's.
        energy: ``auto``, ``ina3221``, ``rapl``, ``nvml``, ``cmd:COMMAND``, ``csv:FILE`` or ``none``.
        sysfs_root: where sensor files are read (``/``; a recorded or synthetic tree to replay one).
        rails: the power rails whose sum is the total, instead of the device profile's.
        idle_seconds: idle power is measured this long first, for the idle-subtracted figure.
        cpus: run on these CPU numbers only (affinity), recorded in the conditions.
        backend: the runtime backend (default: from the sidecar and the suffix).
        compute: the backend's compute unit: cpu, cuda, tensorrt (ONNX Runtime); xnnpack, cpu-no-xnnpack
            (LiteRT); cuda, cuda-fp16 (torch, timed with CUDA events as well).
        profile_ops: add where the time goes per op type, from the backend's profiler (ONNX Runtime).
        until_stable: keep timing until the p50's 95% interval is within +-2%, or this many seconds pass.
        sustained: then run this many seconds of back-to-back inference in 10 windows and report how
            latency, power and temperature drift.
        cooldown: idle this many seconds first (on the machine that runs the bench).

    Returns a dict with ``metrics`` (the manifest's metric keys), ``notes`` (why a metric is
    null), ``energy``, ``memory``, ``cold_start``, ``statistics``, ``flags`` and ``conditions``.
    """
    from edgedl.bench.request import BenchRequest
    from edgedl.bench.session import measure

    options = {k: v for k, v in locals().items() if k not in ("trust_model_code", "BenchRequest", "measure")}
    return measure(BenchRequest.of(**options), trust_model_code)


def inspect(artifact: str | Path, target: str | None = None, input_shapes: dict[str, list[int]] | None = None,
            trust_model_code: bool = False, device: str | None = None, dla: bool = False) -> dict:
    """Static description of an artifact: I/O, opsets, op histogram, params, MACs, size.

    Each format brings its own description (the runtime's backend table names it). For .tflite
    files, ``target`` (``tflite-gpu`` or ``nnapi``) adds the ops that delegate would leave on the
    CPU; for ONNX files, ``target`` ``tensorrt[:VERSION]`` adds the TensorRT lint (``dla``: and the
    nodes that would leave the DLA), and ``input_shapes`` fixes dynamic dimensions.
    """
    import importlib

    import edgedl.runtime as rt
    from edgedl.runtime.sidecar import read_sidecar

    artifact = Path(artifact)
    if not artifact.is_file():
        raise UsageError(f"artifact not found: {artifact}")
    backend = rt.backend_for(artifact, read_sidecar(artifact))
    if backend.inspect is None:
        raise UsageError(f"edgedl inspect cannot describe {backend.format} files yet")
    module, _, func = backend.inspect.partition(":")
    describe = getattr(importlib.import_module(module), func)
    options: dict[str, Any] = {}
    if input_shapes:
        if backend.format != "onnx":
            raise UsageError("--input-shape applies to .onnx files")
        options["input_shapes"] = input_shapes
    if backend.runs_code:
        options["trust_model_code"] = trust_model_code
    profile = named_profile(device)  # an unknown name fails before work
    tensorrt = target is not None and (target == "tensorrt" or target.startswith("tensorrt:"))
    if dla and not tensorrt:
        raise UsageError("--dla applies to --target tensorrt")
    if tensorrt and backend.format != "onnx":
        raise UsageError(f"--target {target} lints ONNX files (what TensorRT's parser reads); {artifact.name} is "
                         f"{backend.format}")
    info = describe(artifact, None if tensorrt else target, **options)
    if tensorrt:
        from edgedl.formats.tensorrt.lint import summarize as lint_tensorrt

        info["tensorrt_lint"] = lint_tensorrt(artifact, target, profile=profile, dla=dla, input_shapes=input_shapes)
    if profile is not None:
        info["device"] = device_fit(profile, backend.format, (read_sidecar(artifact) or {}).get("precision"))
    return info


def fed_batch(input_shapes: dict[str, list[int]], batch: int) -> int:
    """The batch a bench feeds: ``batch``, unless ``--input-shape`` gives a first dimension (the feeds
    then hold that many samples per call, every input alike, and throughput counts them).

    Raises:
        UsageError: ``--batch`` and an ``--input-shape`` batch that disagree.
    """
    given = {shape[0] for shape in input_shapes.values() if len(shape) >= 2}
    if not given or given == {batch}:
        return batch
    if len(given) > 1:
        raise UsageError(f"--input-shape gives batches {sorted(given)}; give every input the same first dimension")
    (shaped,) = given
    if batch != 1:
        raise UsageError(f"--batch {batch} and --input-shape's batch {shaped} disagree; give one of them")
    return shaped


def plan_engine(onnx: str | Path, out: str | Path | None = None, options=None, device: str | None = None,
                tensorrt: str | None = None) -> dict:
    """The TensorRT build plan of an ONNX file, without TensorRT: the lint for the version the device
    (or ``tensorrt``) means, the ``edgedl build-engine`` and ``trtexec`` lines and the cache key."""
    from edgedl.formats.tensorrt.engine import plan
    from edgedl.formats.tensorrt.plan import BuildOptions

    return plan(onnx, options or BuildOptions(), device, tensorrt, engine=str(out) if out else None)


def build_engine(onnx: str | Path, out: str | Path | None = None, options=None, device: str | None = None,
                 cache: str | Path | None = None, use_cache: bool = True, trust: bool = True, console: Any = None) -> dict:
    """Build (or reuse from the engine cache) a TensorRT engine of ``onnx`` on this machine; see
    :func:`edgedl.formats.tensorrt.engine.build_engine`. ``trust`` pins the engine in the trust file:
    the user built it here, from their own ONNX."""
    from edgedl.formats.tensorrt.engine import build_engine as build

    sidecar = build(onnx, out, options, device=device, cache=cache, use_cache=use_cache, console=console)
    if trust:
        from edgedl.runtime.engine_guard import add_trusted

        add_trusted(sidecar["path"])
    return sidecar


# The runtimes that run each format on a device.
FORMAT_RUNTIMES = {"onnx": ("onnxruntime", "tensorrt"), "tflite": ("litert",), "torch": ("torch",),
                   "tensorrt": ("tensorrt",)}


def build_engine_on(onnx: str | Path, on: str, flags: list[str], reach: dict | None = None) -> dict:
    """``edgedl build-engine`` on an SSH device (``--on``): the ONNX file, its sidecar and external
    data go there, the device builds with its own TensorRT (and pins the engine in its trust file),
    and the engine, its sidecar and the build log come back beside the ONNX file, written whole.

    Raises:
        UsageError: not an ONNX file, or not an SSH address.
        DeviceError: the device cannot be reached, has no edgedl or no TensorRT, or the build failed
            (the log is kept beside the ONNX file).
    """
    import os
    import shutil
    import tempfile

    from edgedl.bench.executors import executor_for, scheme_of
    from edgedl.errors import DeviceError
    from edgedl.runtime.sidecar import sidecar_path

    onnx = Path(onnx)
    if not onnx.is_file() or onnx.suffix != ".onnx":
        raise UsageError(f"{onnx}: give an .onnx file to build an engine from")
    if scheme_of(on) != "ssh":
        raise UsageError(f"--on {on}: engines are built over SSH (ssh://host or a host alias)")
    check_writable(onnx.parent / f".{onnx.stem}.probe", "the ONNX file's folder")
    executor = executor_for(on, **(reach or {}))
    facts = executor.check()
    if (facts.get("backends") or {}).get("tensorrt") is None:
        raise DeviceError(f"{executor.label}: {executor.host} has no TensorRT for edgedl to build with (on a Jetson: "
                          "JetPack's python3-libnvinfer, with edgedl's venv made with --system-site-packages)")
    from edgedl.bench.executors.ssh import artifact_members

    members = artifact_members(onnx)
    with tempfile.TemporaryDirectory(prefix=".edgedl-build-", dir=onnx.parent) as tmp:
        rc, log = executor.run_edgedl(["build-engine", f"artifact/{onnx.name}", *flags], members, Path(tmp),
                                      what=f"building the engine of {onnx.name}",
                                      collect="artifact/*.engine artifact/*.engine.json")
        kept_log = onnx.with_name(onnx.stem + ".build.log")
        shutil.copyfile(log, kept_log)
        if rc != 0:
            last = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"{executor.label}: edgedl build-engine on {executor.host} failed: "
                              f"{last.removeprefix('error: ')[:300]} (its log: {kept_log})")
        engines = sorted((Path(tmp) / "out").glob("*.engine"))
        if not engines:
            raise DeviceError(f"{executor.label}: the build on {executor.host} wrote no engine (its log: {kept_log})")
        brought = []
        for engine in engines:
            for path in (engine, sidecar_path(engine)):
                if path.is_file():
                    os.replace(path, onnx.parent / path.name)  # same folder: whole files, never half of one
                    brought.append(onnx.parent / path.name)
    return {"files": [str(p) for p in brought], "log": str(kept_log), "device": facts}


def device_fit(profile, fmt: str, precision: str | None) -> dict:
    """Whether a device profile has a runtime for the format and runs the precision."""
    runtimes = [r for r in FORMAT_RUNTIMES.get(fmt, ()) if r in profile.runtimes]
    base = (precision or "fp32").replace("fio", "")
    fit = {"name": profile.name, "title": profile.title, "runtimes": runtimes,
           "precision": precision, "precision_supported": base in profile.precisions}
    problems = []
    if not runtimes:
        problems.append(f"{profile.title} has no runtime for {fmt} files (it runs {', '.join(profile.runtimes)})")
    if not fit["precision_supported"]:
        problems.append(f"{profile.title} does not run {base} (it runs {', '.join(profile.precisions)})")
    fit["problems"] = problems
    return fit


__all__ = ["compress", "train", "bench", "inspect", "build_engine", "plan_engine", "build_model", "CompressResult",
           "StageError"]
