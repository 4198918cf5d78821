"""Samples keyed by input name, and the feeds a runner takes (numpy only).

The convention for an array named after a model input (documented in the README):

- one more dimension than the input: a sample axis in front; each sample is one whole feed
  (``state`` of a streaming model saved per step);
- the input's rank, when the array is not exactly a static input's shape: samples along the
  first axis (the batch axis), batched together when the input's batch is dynamic;
- exactly a static input's shape: a constant, fed with every sample (a sample rate, an initial
  state); for ``bench`` a single feed;
- integer inputs keep their dtype (ids, masks); nothing is cast silently, except that float64
  data becomes float32 for a float32 input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from edgedl.errors import UsageError

CONVENTION = ("an array with one more dimension than its input holds one feed per sample; one of the input's "
              "rank holds samples along the batch axis; one of exactly a static input's shape is fed with every "
              "sample")


@dataclass
class Samples:
    """Per-sample arrays keyed by input name, plus constants fed with every sample.

    ``stacked``: arrays whose first axis is the batch axis (several samples batch together).
    ``whole``: arrays with a sample axis in front of a full feed (one sample per run).
    ``constants``: arrays fed as they are with every sample.
    """

    stacked: dict[str, np.ndarray] = field(default_factory=dict)
    whole: dict[str, np.ndarray] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        for arrays in (self.stacked, self.whole):
            for value in arrays.values():
                return len(value)
        return 1  # constants alone: one feed

    @property
    def batchable(self) -> bool:
        return not self.whole

    def __getitem__(self, index) -> "Samples":
        """The samples at ``index`` (an array of indices or a slice); constants are kept."""
        return Samples({k: v[index] for k, v in self.stacked.items()}, {k: v[index] for k, v in self.whole.items()},
                       dict(self.constants))

    def batch(self, start: int, size: int, pad_to: int | None = None) -> tuple[dict[str, np.ndarray], int]:
        """The feed for samples ``start:start+size`` (one at a time when arrays are whole feeds) and how
        many real samples it holds; ``pad_to`` pads a short last batch with zeros for a fixed-batch input."""
        if not self.batchable:
            feed = {k: np.ascontiguousarray(v[start]) for k, v in self.whole.items()}
            feed.update({k: np.ascontiguousarray(v[start : start + 1]) for k, v in self.stacked.items()})
            feed.update(self.constants)
            return feed, 1
        feed = {}
        n = 0
        for k, v in self.stacked.items():
            rows = v[start : start + size]
            n = len(rows)
            if pad_to and n < pad_to:
                rows = np.concatenate([rows, np.zeros((pad_to - n, *rows.shape[1:]), rows.dtype)])
            feed[k] = np.ascontiguousarray(rows)
        feed.update(self.constants)
        return feed, n or 1

    def first(self) -> np.ndarray:
        """The first per-sample array (for single-input models)."""
        return next(iter({**self.stacked, **self.whole}.values()))


def _static(info) -> bool:
    return all(isinstance(d, int) and d >= 0 for d in info.shape)


def _fits(info, shape: tuple, offset: int, skip_batch: bool = False) -> bool:
    """Whether ``shape[offset:]`` fits the input's static dimensions (the batch axis ignored if asked)."""
    dims = shape[offset:]
    if len(dims) != len(info.shape):
        return False
    return all((skip_batch and j == 0) or not (isinstance(d, int) and d >= 0) or d == dims[j]
               for j, d in enumerate(info.shape))


def _fit_dtype(info, value: np.ndarray) -> np.ndarray:
    dtype = np.dtype(info.dtype)
    if value.dtype == dtype:
        return value
    if value.dtype == np.float64 and dtype == np.float32:
        return value.astype(np.float32)
    quantized = bool((getattr(info, "quantization", None) or {}).get("scale"))
    if value.dtype.kind == "f" and dtype.kind in "iu" and quantized:
        # the runtime quantizes float32 with the tensor's own scale, as it does for an app's call
        return value.astype(np.float32, copy=False)
    raise UsageError(f"data for input '{info.name}' is {value.dtype} but the model takes {dtype}; "
                     "save the array with that dtype")


def resolve(arrays: Mapping[str, np.ndarray], inputs: Sequence[Any], source: str = "the data") -> Samples:
    """Place each array by the convention above; errors name the input, both shapes and the rule."""
    names = [i.name for i in inputs]
    if len(inputs) == 1 and names[0] not in arrays and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}  # a lone 'x' feeds a single-input model
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UsageError(f"{source} has arrays {sorted(arrays)} but the model's inputs are {names}: missing "
                         f"{missing}; save one array per input name ({CONVENTION})")
    samples = Samples()
    # A recurrent state keeps the batch on another axis ([layers, batch, hidden]): then the arrays at
    # the inputs' own ranks are one feed, as the user wrote them, not samples along axis 0.
    as_written = any(batch_axis(info, inputs) != 0 for info in inputs)
    for info in inputs:
        value = np.asarray(arrays[info.name])
        value = _fit_dtype(info, value)
        rank = len(info.shape)
        if as_written and value.ndim == rank and _fits(info, value.shape, 0):
            samples.constants[info.name] = value
        elif value.ndim == rank + 1 and _fits(info, value.shape, 1):
            samples.whole[info.name] = value
        elif value.ndim == rank and _static(info) and tuple(value.shape) == tuple(info.shape):
            samples.constants[info.name] = value
        elif value.ndim == rank and rank > 0 and _fits(info, value.shape, 0, skip_batch=True):
            samples.stacked[info.name] = value
        else:
            raise UsageError(f"{source}: array '{info.name}' has shape {list(value.shape)}, which does not fit input "
                             f"{info.describe()}: {CONVENTION}")
    counts = {len(v) for v in (*samples.stacked.values(), *samples.whole.values())}
    if len(counts) > 1:
        raise UsageError(f"{source}: the per-sample arrays hold different numbers of samples {sorted(counts)}")
    if as_written and samples.whole:
        _check_one_batch(samples, inputs, source)
    return samples


def _check_one_batch(samples: Samples, inputs: Sequence[Any], source: str) -> None:
    """A streaming model's feed: arrays written as one feed and arrays of one feed per sample must give
    the inputs that share a dynamic dimension on their batch axis (``batch`` in ``input [batch, n]`` and
    ``state [2, batch, 128]``) one size (an 'input' [48, 512] beside a 'state' [48, 2, 1, 128] fed 48
    rows against a state of one). Each shared name is its own group."""
    groups: dict[str, dict[str, tuple[int, int, list[int]]]] = {}  # name: input: (size, axis, shape)
    for info in inputs:
        axis = batch_axis(info, inputs)
        named = info.shape[axis] if info.shape else None
        if not isinstance(named, str) or not any(named in other.shape for other in inputs if other is not info):
            continue  # only a dynamic dimension the inputs share is a size they must agree on
        for store, offset in ((samples.whole, 1), (samples.constants, 0)):  # a per-sample array: one axis more
            if info.name in store:
                shape = list(store[info.name].shape)
                groups.setdefault(named, {})[info.name] = (shape[offset + axis], axis, shape)
    for group in groups.values():
        per_sample = {n: v for n, v in group.items() if n in samples.whole}
        if len({size for size, _, _ in per_sample.values()}) > 1:
            said = ", ".join(f"'{n}' {shape} of batch {size}" for n, (size, _, shape) in per_sample.items())
            raise UsageError(f"{source}: the per-sample arrays give each feed different batches ({said})")
        if not per_sample:
            continue
        whole, (each, _, whole_shape) = next(iter(per_sample.items()))
        for name, (size, axis, shape) in group.items():
            if name in samples.constants and size != each:
                example = [size, *shape[:axis], each, *shape[axis + 1:]]
                raise UsageError(f"{source}: array '{name}' {shape} is one feed of batch {size}, but '{whole}' "
                                 f"{whole_shape} holds one feed per sample of batch {each}: give '{name}' one more "
                                 f"axis in front, one feed per sample (here {example})")


def batch_axis(info, inputs: Sequence[Any]) -> int:
    """The input's batch axis, from the model's own dimensions: the dynamic one named like a dynamic
    dimension of another input (``batch`` in ``input [batch, samples]`` and ``state [2, batch, 128]``),
    else its first axis when that is dynamic, else its first dynamic one, else 0."""
    dynamic = [j for j, d in enumerate(info.shape) if not (isinstance(d, int) and d >= 0)]
    others = {d for other in inputs if other is not info for d in other.shape if isinstance(d, str)}
    shared = [j for j in dynamic if isinstance(info.shape[j], str) and info.shape[j] in others]
    if shared:
        return shared[0]
    if not dynamic or dynamic[0] == 0:
        return 0
    return dynamic[0]


def as_samples(x: Any, inputs: Sequence[Any]) -> Samples:
    """``x`` as Samples for these inputs: Samples as they are, a dict by the convention, an array
    as the samples of a single-input model."""
    if isinstance(x, Samples):
        return x
    if isinstance(x, Mapping):
        return resolve(x, inputs)
    if len(inputs) != 1:
        raise UsageError(f"this model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); give one array "
                         "per input name")
    return resolve({inputs[0].name: x}, inputs)


def check_batch(inputs: Sequence[Any], batch: int) -> None:
    """A model whose inputs all have a fixed first axis runs that batch only. Where some input has a
    dynamic batch axis, the fixed-shape inputs are constants (a state, a sample rate), fed whole."""
    fixed = lambda d: isinstance(d, int) and d >= 0  # noqa: E731
    if any(i.shape and not fixed(i.shape[0]) for i in inputs):
        return
    for info in inputs:
        first = info.shape[0] if info.shape else None
        if fixed(first) and first != batch:
            raise UsageError(f"input '{info.name}' has a fixed batch of {first}; use --batch {first}")


def random_feeds(inputs: Sequence[Any], batch: int, count: int = 4, seed: int = 0,
                 shapes: Mapping[str, Sequence[int]] | None = None) -> list[dict]:
    """``count`` feeds of random values. Integer inputs are small and non-negative (0 or 1), so
    ids and masks stay valid; floats are standard normal. Every dimension past the batch must be
    known (from the model or ``shapes``): a guessed size would time a different model."""
    check_batch(inputs, batch)
    rng = np.random.default_rng(seed)
    resolved = {i.name: concrete_shape(i, batch, (shapes or {}).get(i.name)) for i in inputs}
    feeds = []
    for _ in range(count):
        feed = {}
        for info in inputs:
            shape, dtype = resolved[info.name], np.dtype(info.dtype)
            if dtype.kind in "iu":
                feed[info.name] = rng.integers(0, 2, size=shape).astype(dtype)
            elif dtype.kind == "b":
                feed[info.name] = rng.integers(0, 2, size=shape).astype(bool)
            else:
                feed[info.name] = rng.standard_normal(shape).astype(dtype)
        feeds.append(feed)
    return feeds


def unknown_dims(info, given: Sequence[int] | None = None) -> list[int]:
    """Axes past the batch whose size neither the model nor ``given`` fixes."""
    if given is not None:
        return []
    return [axis for axis, d in enumerate(info.shape) if axis > 0 and not (isinstance(d, int) and d >= 0)]


def concrete_shape(info, batch: int, given: Sequence[int] | None = None) -> tuple[int, ...]:
    """The shape to feed: ``given`` (from --input-shape) if any, else the model's with the batch axis
    set; a dynamic axis past the batch is a usage error naming it and the flag."""
    if given is not None:
        if not _fits(info, tuple(given), 0, skip_batch=True):
            raise UsageError(f"--input-shape {info.name}={'x'.join(map(str, given))} does not fit input "
                             f"{info.describe()}")
        return tuple(int(d) for d in given)
    missing = unknown_dims(info)
    if missing:
        dims = ", ".join(f"axis {a} ('{info.shape[a] or '?'}')" for a in missing)
        example = "x".join(str(d) if isinstance(d, int) and d >= 0 else ("1" if i == 0 else "N")
                           for i, d in enumerate(info.shape))
        raise UsageError(f"input '{info.name}' has dynamic {dims} and no data gives its size; pass "
                         f"--input-shape {info.name}={example} with N set, or --data")
    return tuple(d if isinstance(d, int) and d >= 0 else batch for d in info.shape)


def data_feeds(inputs: Sequence[Any], x: Any, batch: int, limit: int = 64) -> list[dict]:
    """Up to ``limit`` feeds of real samples, batched when every per-sample array allows it."""
    check_batch(inputs, batch)
    samples = as_samples(x, inputs)
    if not samples.batchable and batch != 1:
        raise UsageError("this data holds one whole feed per sample; use --batch 1")
    n = len(samples)
    if samples.batchable and samples.stacked and n < batch:
        reps = batch // max(1, n) + 1
        samples = Samples({k: np.concatenate([v] * reps) for k, v in samples.stacked.items()}, {}, samples.constants)
        n = len(samples)
    step = batch if samples.batchable else 1
    count = max(1, min(limit, n // step))
    return [samples.batch(i * step, step)[0] for i in range(count)]
