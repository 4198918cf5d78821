"""The Python API the CLI calls: compress, train, bench, inspect."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgedl.errors import EdgedlError, StageError, UsageError
from edgedl.recipe import Recipe, load_recipe


def model_kwargs(dataset, overrides: dict | None = None) -> dict[str, Any]:
    """Architecture options that fit a model spec to a dataset (channels, classes, input size)."""
    kwargs: dict[str, Any] = {"in_channels": dataset.input_shape[0]}
    if dataset.num_classes:
        kwargs["num_classes"] = dataset.num_classes
    if len(dataset.input_shape) == 3:
        kwargs["input_size"] = tuple(dataset.input_shape[1:])
    kwargs.update(overrides or {})
    return kwargs


def build_model(recipe: Recipe, dataset) -> Any:
    """The recipe's model, shaped for the dataset unless the recipe's kwargs say otherwise.

    The seed is set first, so the same recipe starts from the same initial weights.
    """
    from edgedl.models import load_model
    from edgedl.train import seed_everything

    if recipe.model.spec.lower().endswith(".onnx"):
        if not Path(recipe.model.spec).is_file():
            raise UsageError(f"model file not found: {recipe.model.spec}")
        return None  # an ONNX model has no torch module; export_onnx imports the file itself
    if recipe.model.input_shapes:
        raise UsageError("model.input_shapes (--input-shape) applies to .onnx models; torch models take "
                         "their shapes from the data")
    seed_everything(recipe.seed)
    return load_model(recipe.model.spec, **model_kwargs(dataset, recipe.model.kwargs))


def compress(
    recipe: Recipe | str | Path,
    out: str | Path | None = None,
    force: bool = False,
    overrides: list[str] | None = None,
    console: Any = None,
    progress: bool = True,
) -> Path:
    """Run a recipe's stages and return the run directory.

    A stage that fails marks itself failed in the manifest, keeps the artifacts of earlier
    stages, writes the report, and raises :class:`StageError`.
    """
    from edgedl import report
    from edgedl.data import load_dataset
    from edgedl.run import RunDir, default_run_dir
    from edgedl.stages import RunContext, stage_for

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise UsageError("overrides apply to recipe files; edit the Recipe object instead")
    stages = [stage_for(cfg) for cfg in recipe.stages]  # unknown stages fail before any work
    out = Path(out) if out else default_run_dir(recipe)
    RunDir.is_free(out, force)  # refuse an existing run before spending time on data and model
    dataset = load_dataset(recipe.data.spec, seed=recipe.seed, val_fraction=recipe.data.val_fraction,
                           test_fraction=recipe.data.test_fraction)
    model = build_model(recipe, dataset)
    run = RunDir(out, recipe, force=force)
    run.manifest["notes"].extend(dataset.notes)
    from_registry = model is not None and ":" not in recipe.model.spec and not model.checkpoint
    if from_registry and not any(cfg.stage == "train" for cfg in recipe.stages):
        run.manifest["notes"].append(f"'{recipe.model.spec}' comes from the registry and is not trained in this "
                                     "run: its weights are random, so accuracy is meaningless")
    ctx = RunContext(recipe=recipe, run=run, dataset=dataset, model=model, console=console, progress=progress)
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
                run.stage_finished(record, time.perf_counter() - start, error=message)
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
            console.print(report.table(run.manifest))
            console.print(f"run directory: {run.path}")
    return run.path


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
) -> dict:
    """Train a model spec on a data spec and write an edgedl checkpoint to ``out``."""
    from edgedl.data import load_dataset
    from edgedl.models import save_checkpoint
    from edgedl.recipe import validate_recipe
    from edgedl.torch_utils import progress_bar
    from edgedl.train import FitConfig, accuracy, fit

    out = Path(out)
    if not out.parent.is_dir():
        raise UsageError(f"output folder does not exist: {out.parent}")
    recipe = validate_recipe({"model": model, "data": data, "seed": seed, "targets": [],
                              "stages": [{"stage": "train", "epochs": epochs, "lr": lr, "batch_size": batch_size}]},
                             source="train options")
    dataset = load_dataset(data, seed=seed)
    built = build_model(recipe, dataset)
    if built is None:
        raise UsageError(f"edgedl train needs a PyTorch model; '{model}' is an ONNX file")
    with progress_bar(console, enabled=progress) as bar:
        result = fit(built.module, dataset.train, dataset.val,
                     FitConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed), progress=bar)
    save_checkpoint(out, built.module, built.arch, data=data, seed=seed, best_epoch=result.best_epoch,
                    val_accuracy=result.best_val_accuracy)
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
) -> dict:
    """Measure an artifact's latency, throughput and peak memory through edgedl.runtime.

    Returns a dict with ``metrics`` (the manifest's metric keys), ``notes`` (why a metric is
    null) and ``conditions`` (what the measurement ran under).
    """
    import edgedl.runtime as rt
    from edgedl.bench import conditions, measure_latency, peak_rss_mb
    from edgedl.bench.feeds import data_feeds, random_feeds

    for name, value, low in (("--runs", runs, 1), ("--warmup", warmup, 0), ("--batch", batch, 1)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}, got {value}")
    artifact = Path(artifact)
    notes = {
        "accuracy": "bench measures speed and memory; accuracy comes from `edgedl compress` (evaluate stage)",
        "energy_j_per_inference": "no energy sensor on this host (CPU); energy needs a device power source",
    }
    with rt.load(artifact, threads=threads) as runner:
        if data:
            from edgedl.data import load_dataset

            feeds = data_feeds(runner.inputs, load_dataset(data).test.x, batch)
        else:
            feeds = random_feeds(runner.inputs, batch)
        before = conditions.thermal()
        run = runner.run
        n = len(feeds)
        result = measure_latency(lambda i: run(feeds[i % n]), runs=runs, warmup=warmup,
                                 min_seconds=min_seconds, batch=batch)
        after = conditions.thermal()
        backend = runner.backend
        sidecar = runner.sidecar
    params = macs = None
    if artifact.suffix == ".onnx":
        try:
            from edgedl import onnx_graph

            graph = onnx_graph.load_graph(artifact)
            params, (macs, _) = onnx_graph.count_params(graph), onnx_graph.count_macs(graph)
        except EdgedlError as exc:
            notes["params"] = notes["macs"] = str(exc)
    else:
        from edgedl.onnx_graph import COUNTED_ON_ONNX

        notes["params"] = notes["macs"] = COUNTED_ON_ONNX
    return {
        "artifact": str(artifact),
        "backend": backend,
        "format": sidecar.get("format", artifact.suffix.lstrip(".")),
        "precision": sidecar.get("precision"),
        "metrics": {
            "accuracy": None,
            "params": params,
            "macs": macs,
            "latency_ms": result.stats(),
            "throughput_ips": result.throughput_ips,
            "peak_rss_mb": peak_rss_mb(),
            "energy_j_per_inference": None,
        },
        "notes": notes,
        "conditions": {
            "batch": batch,
            "threads": threads,
            "runs": len(result.samples_ms),
            "warmup": warmup,
            "min_seconds": min_seconds,
            "wall_s": result.wall_s,
            "feeds": f"data:{data}" if data else "random",
            "peak_rss": "high-water mark of the bench process: interpreter, runtime and model",
            "versions": conditions.versions(),
            "host": conditions.host(),
            "thermal_before": before,
            "thermal_after": after,
        },
    }


def inspect(artifact: str | Path, target: str | None = None) -> dict:
    """Static description of an artifact: I/O, opsets, op histogram, params, MACs, size.

    For .tflite files, ``target`` (``tflite-gpu`` or ``nnapi``) adds the ops that delegate would
    leave on the CPU, where a documented table can tell.
    """
    artifact = Path(artifact)
    if not artifact.is_file():
        raise UsageError(f"artifact not found: {artifact}")
    suffix = artifact.suffix.lower()
    if suffix == ".onnx":
        if target:
            raise UsageError("--target applies to .tflite files")
        from edgedl import onnx_graph

        return onnx_graph.summarize(artifact)
    if suffix == ".tflite":
        from edgedl import tflite_graph

        return tflite_graph.summarize(artifact, target)
    raise UsageError(f"cannot inspect '{artifact.name}': edgedl inspect reads .onnx and .tflite files")


__all__ = ["compress", "train", "bench", "inspect", "build_model", "StageError"]
