"""Text in, ids and masks out, the way the model's own tokenizer did it when edgedl exported it.

The sidecar of a text model names its tokenizer (``model.tokenizer``: a ``tokenizer.json`` beside
the artifact, and the sequence length). Hugging Face's ``tokenizers`` library reads it (a JSON
table, no code); it is imported only when text is given, so the runtime stays numpy-only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgedl.errors import MissingDependencyError, UsageError

_CACHE: dict = {}


def encode(texts: Sequence[str], tokenizer: dict, folder: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{input name: int64 array (len(texts), length)}`` for the model's inputs (ids, mask, types)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingDependencyError("tokenizers", "text", "Feeding text to the model") from None
    if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("file"), str) \
            or not isinstance(tokenizer.get("max_length"), int):
        raise UsageError("the sidecar's model.tokenizer must name a file and an integer max_length; re-export")
    path = (folder / tokenizer["file"]).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise UsageError(f"the sidecar's tokenizer {tokenizer['file']} lies outside {folder}; edgedl reads it only "
                         "from beside the artifact")
    if not path.is_file():
        raise UsageError(f"the model's tokenizer {path.name} is missing beside the artifact; copy it from the run")
    length = int(tokenizer["max_length"])
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, length)  # a tokenizer written again is read again
    if key not in _CACHE:
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise UsageError(f"cannot read tokenizer {path.name}: {str(exc).splitlines()[0][:200] if str(exc) else exc}") from None
        tok.enable_truncation(max_length=length)
        pad = tok.token_to_id("[PAD]")
        tok.enable_padding(length=length, pad_id=pad if pad is not None else 0)
        _CACHE[key] = tok
    encoded = _CACHE[key].encode_batch(list(texts))
    arrays = {"input_ids": [e.ids for e in encoded], "attention_mask": [e.attention_mask for e in encoded],
              "token_type_ids": [e.type_ids for e in encoded]}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UsageError(f"the model's inputs {missing} are not what a tokenizer gives (input_ids, attention_mask, "
                         "token_type_ids); feed it a dict of arrays (or, as data, an .npz keyed by input name)")
    return {n: np.asarray(arrays[n], dtype=np.int64) for n in names}
