"""Inputs for a benchmark: from a dataset, or random arrays shaped and typed like the inputs."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgedl.errors import UsageError
from edgedl.runtime.base import TensorInfo


def check_batch(inputs: Sequence[TensorInfo], batch: int) -> None:
    for info in inputs:
        first = info.shape[0] if info.shape else None
        if isinstance(first, int) and first > 0 and first != batch:
            raise UsageError(f"input '{info.name}' has a fixed batch of {first}; use --batch {first}")


def random_feeds(inputs: Sequence[TensorInfo], batch: int, count: int = 4, seed: int = 0) -> list[dict]:
    """``count`` feeds of random values. Integer inputs are small and non-negative (0 or 1), so
    ids and masks stay valid; floats are standard normal."""
    check_batch(inputs, batch)
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for info in inputs:
            shape, dtype = info.concrete_shape(batch), np.dtype(info.dtype)
            if dtype.kind in "iu":
                feed[info.name] = rng.integers(0, 2, size=shape).astype(dtype)
            elif dtype.kind == "b":
                feed[info.name] = rng.integers(0, 2, size=shape).astype(bool)
            else:
                feed[info.name] = rng.standard_normal(shape).astype(dtype)
        feeds.append(feed)
    return feeds


def data_feeds(inputs: Sequence[TensorInfo], x: np.ndarray, batch: int, limit: int = 64) -> list[dict]:
    """Up to ``limit`` batches of real samples for a single-input model."""
    check_batch(inputs, batch)
    if len(inputs) != 1:
        raise UsageError("--data feeds single-input models; this one has "
                         f"{len(inputs)} inputs ({', '.join(i.name for i in inputs)})")
    if len(x) < batch:
        x = np.concatenate([x] * (batch // max(1, len(x)) + 1))
    name, dtype = inputs[0].name, np.dtype(inputs[0].dtype)
    if x.dtype != dtype:
        raise UsageError(f"data is {x.dtype} but input '{name}' takes {dtype}")
    n = min(limit, len(x) // batch)
    return [{name: np.ascontiguousarray(x[i * batch : (i + 1) * batch])} for i in range(n)]
