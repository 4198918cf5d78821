"""What stages share, on plain values (no run context, no stage imports): sidecars, running an
artifact on samples, parity with a reference, the metric keys.

Every stage imports from here rather than from another stage, so stages stay independent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import edgedl.runtime as rt

# Every artifact record carries these metrics (null with a reason when not measured).
METRIC_KEYS = ("accuracy", "params", "macs", "latency_ms", "throughput_ips", "peak_rss_mb", "energy_j_per_inference")
# The ones `edgedl bench` measures.
BENCH_METRICS = ("latency_ms", "throughput_ips", "peak_rss_mb", "energy_j_per_inference")
PARITY_SAMPLES = 16  # samples an export is compared with torch on


def write_sidecar(path, format: str, precision: str, body: dict) -> dict:
    """Write ``path``'s sidecar (atomically): the format version, the file's name and sha256, and ``body``."""
    from edgedl._fs import atomic_write_json, sha256_file
    from edgedl.runtime.sidecar import SIDECAR_VERSION, sidecar_path

    path = Path(path)
    sidecar = {"edgedl_sidecar": SIDECAR_VERSION, "artifact": path.name, "sha256": sha256_file(path),
               "format": format, "precision": precision, **body}
    atomic_write_json(sidecar_path(path), sidecar)
    return sidecar


def precision_label(precision: str) -> str:
    """The manifest's precision and file-name tag for a requested precision (int8_dynamic -> int8dyn,
    int8_float_io -> int8fio)."""
    return {"int8_dynamic": "int8dyn", "int8_float_io": "int8fio"}.get(precision, precision)


def task_of(info: dict | None) -> str:
    """What a model does, from what its folder or registry entry says: ``classification`` (text or
    image classification too), ``embedding`` (feature extraction) or ``reconstruction``."""
    task = (info or {}).get("task")
    return {"feature-extraction": "embedding", "text-classification": "classification",
            "image-classification": "classification"}.get(task, task) or "classification"


# Tasks whose quality is not a label's: judged against the float model's outputs (and, for a
# reconstruction, against the input itself), never by argmax against the data's classes.
UNLABELLED_TASKS = ("embedding", "reconstruction")


def model_kwargs(dataset, overrides: dict | None = None) -> dict[str, Any]:
    """Architecture options that fit a model spec to a dataset (channels, classes, input size)."""
    kwargs: dict[str, Any] = {"in_channels": dataset.input_shape[0]}
    if dataset.num_classes:
        kwargs["num_classes"] = dataset.num_classes
    if len(dataset.input_shape) == 3:
        kwargs["input_size"] = tuple(dataset.input_shape[1:])
    kwargs.update(overrides or {})
    return kwargs


def tensor_dict(info) -> dict:
    """A runtime TensorInfo as the sidecar's JSON form."""
    out = {"name": info.name, "shape": list(info.shape), "dtype": info.dtype}
    if info.quantization:
        out["quantization"] = info.quantization
    return out


def runner_tensors(path, verify: bool = False) -> tuple[list[dict], list[dict]]:
    """The inputs and outputs of an artifact, as the runtime reports them."""
    with rt.load(path, verify=verify) as runner:
        return [tensor_dict(i) for i in runner.inputs], [tensor_dict(o) for o in runner.outputs]


def under_model_names(tensors: list[dict], model: list[dict]) -> list[dict]:
    """A file's tensors under the model's names, by position, each keeping the file's own name as
    ``file_name`` (a LiteRT file's ``serving_default_args_0`` is the model's ``input``): the runtime
    then takes the same names on every format of one model."""
    def same(a: list, b: list) -> bool:  # batch and dynamic axes aside
        return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a[1:], b[1:]))

    if len(tensors) != len(model) or not all(same(t["shape"], m["shape"]) for t, m in zip(tensors, model)):
        return tensors  # not the same tensors in the same order: the file's own names stay
    return [t if t["name"] == m["name"] else {**t, "name": m["name"], "file_name": t["name"]}
            for t, m in zip(tensors, model)]


def build_sidecar(dataset, inputs: list[dict], outputs: list[dict], *, source: dict, known_layout: bool,
                  model: dict | None = None, **extra) -> dict:
    """What the runtime needs beside the file: tensors with their layout, task, normalization, labels.

    ``known_layout``: the exporter keeps PyTorch's NCHW for 4-D inputs. Otherwise (an imported
    file) NCHW is only assumed when the second dimension looks like channels (1, 3 or 4).
    """
    for info in inputs:
        if len(info["shape"]) == 4 and (known_layout or info["shape"][1] in (1, 3, 4)):
            info["layout"] = "NCHW"
    task = task_of(model) if (model or {}).get("task") in ("feature-extraction", "reconstruction") \
        else infer_task(dataset, outputs)
    return {"inputs": inputs, "outputs": outputs, "task": task, "normalization": dataset.normalization,
            "labels": dataset.labels, "source": source, **({"model": model} if model else {}), **extra}


def with_tokenizer_beside(info: dict, folder: Path, stem: str) -> dict:
    """A model's info with its tokenizer file copied into ``folder`` as ``STEM.tokenizer.json`` and
    named relative to it, so that the artifacts there and their sidecars travel to a device whole."""
    from edgedl._fs import atomic_write_bytes

    tokenizer = (info or {}).get("tokenizer")
    if not tokenizer or not Path(tokenizer["file"]).is_absolute():
        return info
    name = f"{stem}.tokenizer.json"
    atomic_write_bytes(Path(folder) / name, Path(tokenizer["file"]).read_bytes())
    return {**info, "tokenizer": {**tokenizer, "file": name}}


def example_inputs(inputs) -> tuple:
    """Zeros for one sample of each input (TensorInfos), in their dtypes: ids and masks stay integers."""
    import torch

    return tuple(torch.zeros((1, *[d if isinstance(d, int) else 1 for d in info.shape[1:]]),
                             dtype=getattr(torch, info.dtype)) for info in inputs)


def as_outputs(out: Any) -> tuple:
    """A torch model's output as a tuple of its outputs: one tensor, or the tuple or list it returned."""
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def multiple_outputs(module: Any, x: np.ndarray) -> bool:
    """Whether a torch model returns several outputs (a tuple or list of more than one) for ``x``."""
    import torch

    training = module.training
    try:
        with torch.no_grad():
            out = module.eval()(torch.from_numpy(np.ascontiguousarray(x)))
    finally:
        module.train(training)
    return len(as_outputs(out)) > 1


def output_names(out: Any, num_classes: int | None) -> list[str]:
    """The names edgedl gives a torch model's outputs, in its sidecars and ONNX exports: ``logits`` (a
    classifier) or ``output`` for one; ``output_0``, ``output_1``, ... for a tuple of several (a
    detector's boxes and scores), as edgedl.runtime's torch backend names them."""
    if len(as_outputs(out)) > 1:
        return [f"output_{k}" for k in range(len(out))]
    return ["logits" if num_classes else "output"]


def checkpoint_sidecar(module: Any, dataset, spec: str, inputs: list | None = None, hf: dict | None = None) -> dict:
    """The same sidecar as an export's, so that edgedl.runtime's torch backend (the reference)
    feeds and post-processes a checkpoint exactly as it does the exported files. ``inputs``: the
    model's own inputs (TensorInfos) when it declares them; ``hf``: a Hugging Face folder's task and
    tokenizer, recorded for the device app."""
    import torch

    training = module.training
    example = example_inputs(inputs) if inputs else (torch.zeros((1, *dataset.input_shape)),)
    try:
        with torch.no_grad():
            out = module.eval()(*example)
    finally:
        module.train(training)
    declared = ([{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in inputs] if inputs else
                [{"name": "input", "shape": [None, *dataset.input_shape], "dtype": "float32"}])
    outputs = [{"name": name, "shape": [None, *o.shape[1:]], "dtype": "float32"}
               for name, o in zip(output_names(out, dataset.num_classes), as_outputs(out))]
    return build_sidecar(dataset, declared, outputs, known_layout=True, source={"model": spec}, model=hf)


def infer_task(dataset, outputs: list[dict]) -> str:
    """``classification`` when the data has classes or the one output is (batch, classes)."""
    if dataset.num_classes:
        return "classification"
    shape = outputs[0]["shape"] if len(outputs) == 1 else []
    return "classification" if len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 1 else "unknown"


def runnable(record: dict) -> bool:
    """Whether edgedl.runtime has a backend for this artifact's format."""
    return rt.backend_for_format(record["format"]) is not None


def predict(path, x: Any, batch_size: int = 256, **load_options: Any) -> np.ndarray:
    """The artifact's first output for every sample of ``x``, run through edgedl.runtime.

    ``x`` is an array of samples (single-input models) or a :class:`edgedl.data.Samples` of
    arrays keyed by input name.
    """
    return next(iter(predict_outputs(path, x, batch_size, first_only=True, **load_options).values()))


def predict_outputs(path, x: Any, batch_size: int = 256, first_only: bool = False,
                    **load_options: Any) -> dict[str, np.ndarray]:
    """The artifact's outputs that have one row per sample, by name, for every sample of ``x`` (as
    :func:`predict`; ``first_only``: the first output alone). An output without a batch axis (a
    constant, a count) is left out."""
    from edgedl.data.feeds import as_samples

    with rt.load(path, **load_options) as runner:
        samples = as_samples(x, runner.inputs)
        first = runner.inputs[0].shape[0] if runner.inputs[0].shape else None
        fixed = first if isinstance(first, int) and first > 0 else None
        step = fixed or batch_size
        outputs: dict[str, list] = {}
        for start in range(0, len(samples), step):
            feed, n = samples.batch(start, step, pad_to=fixed)
            for i, (name, value) in enumerate(runner.run(feed).items()):
                if i == 0 or (not first_only and np.ndim(value) and len(value) == (fixed or n)):
                    outputs.setdefault(name, []).append(value[:n])
    return {name: np.concatenate(parts) for name, parts in outputs.items()}


def task_outputs(path, x: Any, batch_size: int = 256, **load_options: Any):
    """What a recipe's own measure (``metric``) is given of a file: its output, where it has one; else
    every output with one row per sample, by name in the file's order (a detector's score and box maps
    at each stride: a measure of detections needs them all)."""
    outputs = predict_outputs(path, x, batch_size, **load_options)
    return next(iter(outputs.values())) if len(outputs) == 1 else outputs


def accuracy(path, split, batch_size: int = 256, **load_options: Any) -> float:
    """Top-1 accuracy of an artifact on a labelled split, run through edgedl.runtime."""
    logits = predict(path, split.x, batch_size, **load_options)
    return float((logits.reshape(len(split), -1).argmax(1) == split.y).mean())


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of an accuracy measured on ``n`` samples: on a test set of a few
    hundred, a point of accuracy is often inside the noise, and this says how much."""
    if n <= 0:
        return [0.0, 1.0]
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


SCALE_SPLIT = 100.0  # values whose magnitudes differ this much or more cannot share one INT8 range
GAP = 10.0  # and with no channel between them: the jump between the two groups at least this large


def scale_groups(reference: np.ndarray, max_channels: int = 4096) -> list[tuple[int, list[int]]]:
    """The two channel groups of an output that joins values of different scales: [(axis, indices)]
    for each, or [] where its scale is uniform. A group is a contiguous run of channels (a Concat lays
    its inputs side by side), along axis 1, or along the last axis of a rank-3 output (a detector's
    [batch, 4 + classes, anchors] or [batch, anchors, 4 + classes]); the two groups' peaks are at least
    100x apart with a 10x jump between them, so an embedding's uneven units or a photo's dark columns
    are not split."""
    ref = np.abs(np.asarray(reference, dtype=np.float32))
    if ref.ndim < 3:  # [batch, features]: an embedding's or logits' units are not channel groups
        return []
    for axis in (1, 2) if ref.ndim == 3 else (1,):
        size = ref.shape[axis]
        if not 2 <= size <= max_channels:
            continue
        mags = ref.max(axis=tuple(a for a in range(ref.ndim) if a != axis)).astype(np.float64)
        if not np.all(np.isfinite(mags)):
            continue
        for cut in range(1, size):  # contiguous: the channels before the cut, and from it on
            low, high = sorted((mags[:cut], mags[cut:]), key=lambda m: m.max())
            if low.max() > 0 and high.min() >= GAP * low.max() and high.max() >= SCALE_SPLIT * low.max():
                return [(axis, list(range(cut))), (axis, list(range(cut, size)))]
    return []


def slice_agreement(reference: np.ndarray, candidate: np.ndarray,
                    groups: list[tuple[int, list[int]]] | None = None) -> tuple[float, str | None]:
    """The worse of an output's two scale groups (:func:`scale_groups`), each judged on its own:
    1 - RMS(candidate - reference) / the group's peak, so a group of 0..1 scores that INT8 flattened to
    one value scores low even while the whole output's cosine stays near 1. (1.0, None) where the
    output's scale is uniform."""
    ref = np.asarray(reference, dtype=np.float32)
    out = np.asarray(candidate, dtype=np.float32)
    groups = scale_groups(ref) if groups is None else groups
    worst, where = 1.0, None
    for axis, group in groups:
        r = np.take(ref, group, axis=axis)
        o = np.take(out, group, axis=axis)
        peak = float(np.abs(r).max())
        rms = float(np.sqrt(np.mean((o.astype(np.float64) - r) ** 2)))
        value = 1.0 if peak == 0 else float(np.clip(1 - rms / peak, 0, 1))
        if where is None or value < worst:
            worst, where = value, (f"channels {group[0]}-{group[-1]} on axis {axis} (values up to {peak:.3g}): "
                                   f"1 - rms error / peak = {value:.4f}")
    return worst, where


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Max abs difference, mean cosine similarity per sample, and top-1 agreement (2-D outputs)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {out.shape}")
    ref_norm, out_norm = np.linalg.norm(ref, axis=1), np.linalg.norm(out, axis=1)
    norms = ref_norm * out_norm
    # One side zero: the same where the other is negligible against the largest sample (a
    # probability of 0.001 quantized to 0), nothing in common otherwise (scores quantized to 0).
    negligible = 1e-2 * float(ref_norm.max()) if len(ref_norm) else 0.0
    cosine = np.where(norms > 0, (ref * out).sum(1) / np.maximum(norms, 1e-30),
                      np.where(np.maximum(ref_norm, out_norm) <= negligible, 1.0, 0.0))
    return {
        "max_abs_diff": float(np.abs(ref - out).max()),
        "cosine": float(cosine.mean()),
        "top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
        "samples": int(len(ref)),
    }
