"""Small torch helpers shared by the stages (imported only where torch is already needed)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


def count_macs_params(module: Any, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """MACs and parameters for one sample, counted by Torch-Pruning's op counter."""
    import torch
    import torch_pruning as tp

    was_training = module.training
    module.eval()
    try:
        macs, params = tp.utils.count_ops_and_params(module, torch.zeros(1, *input_shape))
    finally:
        module.train(was_training)
    return int(macs), int(params)


@contextlib.contextmanager
def progress_bar(console: Any, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar on ``console``, or None when progress is off."""
    if not enabled or console is None:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        yield progress
