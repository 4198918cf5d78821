"""Small torch helpers shared by the stages (imported only where torch is already needed)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


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
