"""Data from the user's own code: ``path/to/feeds.py:function`` or ``package.module:function``.

The function returns or yields samples, each a dict keyed by the model's input names (one sample,
without a batch axis; integer arrays keep their dtype) with an optional ``"y"`` label, or a bare
array for a single-input model. edgedl takes up to :data:`LIMIT` of them. It is code: it runs
because the user named it (``--data``) or, in a recipe file, with ``--trust-model-code``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from edgedl.errors import EdgedlError, UsageError

LIMIT = 4096  # samples taken from a generator that may not end


def is_code_spec(spec: str) -> bool:
    """``file.py:fn`` or ``package.module:fn`` (the built-in specs ``digits:``, ``random:``, ``text:``,
    ``images:`` are not code)."""
    head, _, attr = spec.rpartition(":")
    if not head or not attr or head in ("digits", "random", "text", "images"):
        return False
    return head.endswith(".py") or (attr.isidentifier() and all(part.isidentifier() for part in head.split(".")))


def load_samples(spec: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Arrays keyed by input name (samples along axis 0) and the labels, if every sample has one."""
    from edgedl.models.spec import _import_target

    target, _, attr = spec.rpartition(":")
    function = getattr(_import_target(target, spec), attr, None)
    if function is None or not callable(function):
        raise UsageError(f"--data {spec}: '{attr}' is not a callable in {target}")
    try:
        produced = function()
        items = list(itertools.islice(produced if not isinstance(produced, dict) else [produced], LIMIT))
    except Exception as exc:
        raise EdgedlError(f"--data {spec} failed: {type(exc).__name__}: {exc}") from None
    if not items:
        raise UsageError(f"--data {spec} gave no samples")
    first = items[0]
    names = sorted(k for k in first if k != "y") if isinstance(first, dict) else ["x"]
    arrays: dict[str, list] = {n: [] for n in names}
    labels: list = []
    for index, item in enumerate(items):
        sample: Any = item if isinstance(item, dict) else {"x": item}
        if sorted(k for k in sample if k != "y") != names:
            raise UsageError(f"--data {spec}: sample {index} has {sorted(sample)}, the first had {names}")
        for name in names:
            arrays[name].append(np.asarray(sample[name]))
        labels.append(sample.get("y"))
    try:
        stacked = {n: np.stack(v) for n, v in arrays.items()}
    except ValueError as exc:
        raise UsageError(f"--data {spec}: samples of one input differ in shape ({exc})") from None
    for name, value in stacked.items():
        if value.dtype == np.float64:
            stacked[name] = value.astype(np.float32)
    y = np.asarray(labels, dtype=np.int64) if all(label is not None for label in labels) else None
    return stacked, y
