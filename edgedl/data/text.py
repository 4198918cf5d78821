"""Text data for a model with a tokenizer: ``text:FILE``, one sentence per line (``label<TAB>sentence``
lines carry a class), tokenized by the model's own ``tokenizer.json`` (Hugging Face's tokenizers
library: a JSON table, no code) into ids and masks of the model's sequence length, int64."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgedl.errors import MissingDependencyError, UsageError

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
    """Ids and masks (int64, padded and truncated to the model's length) keyed by the model's input names."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingDependencyError("tokenizers", "hf", "Tokenizing text") from None
    try:
        tok = Tokenizer.from_file(str(tokenizer["file"]))
    except Exception as exc:
        raise UsageError(f"cannot read tokenizer {tokenizer['file']}: {str(exc).splitlines()[0][:200]}") from None
    length = int(tokenizer["max_length"])
    tok.enable_truncation(max_length=length)
    pad_id = tok.token_to_id("[PAD]") if tok.token_to_id("[PAD]") is not None else 0
    tok.enable_padding(length=length, pad_id=pad_id)
    encoded = tok.encode_batch(sentences)
    arrays = {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
              "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
              "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64)}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UsageError(f"the model's inputs {missing} are not what a tokenizer gives (input_ids, attention_mask, "
                         "token_type_ids); bring the data as .npz keyed by input name")
    return {n: arrays[n] for n in names}
