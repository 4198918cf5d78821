"""Text data for a model with a tokenizer: ``text:FILE``, one sentence per line (``label<TAB>sentence``
lines carry a class), tokenized by the model's own ``tokenizer.json`` (Hugging Face's tokenizers
library: a JSON table, no code) into ids and masks of the model's sequence length, int64, through
the same encoding the runtime uses (edgedl.runtime.text)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgedl.errors import UsageError

TEXT_LIMIT = 256 << 20  # bytes of text edgedl reads from one file


def read_lines(path: Path) -> tuple[list[str], list[str] | None]:
    """Sentences, and their labels when every line is ``label<TAB>sentence``."""
    if not path.is_file():
        raise UsageError(f"text file not found: {path}")
    if path.stat().st_size > TEXT_LIMIT:
        raise UsageError(f"{path} is over {TEXT_LIMIT >> 20} MiB; give a sample of it")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    if not lines:
        raise UsageError(f"{path} holds no sentences (one per line)")
    pairs = [line.split("\t", 1) for line in lines]
    if all(len(p) == 2 for p in pairs):
        return [p[1] for p in pairs], [p[0] for p in pairs]
    return lines, None


def tokenize(sentences: list[str], tokenizer: dict, names: list[str]) -> dict[str, np.ndarray]:
    """Ids and masks (int64, padded and truncated to the model's length) keyed by the model's input
    names: the runtime's own encoding, so calibration, evaluation and a device app's predict() agree."""
    from edgedl.runtime.text import encode

    file = Path(tokenizer["file"]).resolve()  # (a Hugging Face cache links it into its blobs)
    return encode(sentences, {**tokenizer, "file": file.name}, file.parent, names)
