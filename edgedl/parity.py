"""Compare an artifact's outputs against a reference (numpy only)."""

from __future__ import annotations

import numpy as np


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Max abs difference, mean cosine similarity per sample, and top-1 agreement (2-D outputs)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {out.shape}")
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.where(norms > 0, (ref * out).sum(1) / np.maximum(norms, 1e-30), 1.0)
    return {
        "max_abs_diff": float(np.abs(ref - out).max()),
        "cosine": float(cosine.mean()),
        "top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
        "samples": int(len(ref)),
    }
