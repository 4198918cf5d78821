"""The one training loop: training, fine-tuning, distillation and QAT all run through ``fit``.

Callers change what is optimised through ``loss_fn``, never by writing another loop.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgedl.data import Split
from edgedl.errors import UsageError


@dataclass
class FitConfig:
    epochs: int = 10
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    label_smoothing: float = 0.0
    seed: int = 0


@dataclass
class FitResult:
    best_epoch: int
    best_val_accuracy: float | None
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed torch and numpy and ask torch for deterministic kernels where it has them."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def accuracy(model: Any, split: Split, batch_size: int = 512) -> float:
    """Top-1 accuracy of a torch module on a labelled split (used for model selection only)."""
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in split.batches(batch_size):
            correct += int((call(model, tensors(xb)).argmax(1).numpy() == yb).sum())
    return correct / max(1, len(split))


class _Inputs(tuple):
    """A model's several inputs (ids and a mask), indexed together along the batch axis."""

    def __getitem__(self, index):
        return _Inputs(t[index] for t in self)


def tensors(x: Any) -> Any:
    """Torch tensors of a split's samples: one tensor, or one per input (in the model's order) for a
    model of several inputs (a text model's ids and mask)."""
    import torch

    from edgedl.data.feeds import Samples

    if isinstance(x, Samples):
        if x.whole or x.constants:
            raise UsageError("training takes samples along the batch axis; this data holds whole feeds or constants")
        return _Inputs(torch.from_numpy(v) for v in x.stacked.values())
    return torch.from_numpy(x)


def call(model: Any, x: Any) -> Any:
    """``model(x)``, or ``model(*x)`` for several inputs."""
    return model(*x) if isinstance(x, _Inputs) else model(x)


def reconstruction_mse(model: Any, split: Split, batch_size: int = 512) -> float:
    """Mean squared error of a model's reconstruction of its input, over a split."""
    import torch

    model.eval()
    total = 0.0
    with torch.no_grad():
        for xb, _ in split.batches(batch_size):
            x = torch.from_numpy(xb)
            total += float(((model(x) - x) ** 2).mean(dim=tuple(range(1, x.ndim))).sum())
    return total / max(1, len(split))


def fit(
    model: Any,
    train: Split,
    val: Split | None,
    config: FitConfig,
    loss_fn: Callable[[Any, Any, Any], Any] | None = None,
    progress: Any = None,
    extra_params: list | None = None,
    task: str = "classification",
) -> FitResult:
    """Train ``model`` in place and leave it holding the weights of the best validation epoch.

    Args:
        model: a torch module.
        train: labelled training split.
        val: labelled validation split used to pick the best epoch (None: keep the last).
        config: optimiser settings and seed.
        loss_fn: ``loss_fn(model, x, y) -> scalar tensor``; default cross entropy on logits.
        progress: a ``rich.progress.Progress`` to report into, or None for silence.
        extra_params: parameters outside ``model`` that ``loss_fn`` trains too (projections).
        task: ``reconstruction`` trains the model to give back its input (mean squared error, no labels
            needed) and picks the epoch of the lowest validation error (stored negated as the score).
    """
    import torch
    import torch.nn.functional as F

    reconstruct = task == "reconstruction"
    if train.y is None and not reconstruct:
        raise UsageError("training needs labels; this dataset has none (use digits or a labelled .npz)")
    seed_everything(config.seed)
    if loss_fn is None and reconstruct:
        def loss_fn(m, xb, yb):
            return F.mse_loss(m(xb), xb)
    elif loss_fn is None:
        def loss_fn(m, xb, yb):
            return F.cross_entropy(call(m, xb), yb, label_smoothing=config.label_smoothing)

    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params or [])
    if config.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    elif config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)
    else:
        raise UsageError(f"unknown optimizer '{config.optimizer}'; use adamw or sgd")
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch)
    )
    x_all = tensors(train.x)
    y_all = torch.from_numpy(train.y) if train.y is not None else torch.zeros(len(train), dtype=torch.long)
    gen = torch.Generator().manual_seed(config.seed)
    task = progress.add_task("train", total=config.epochs * steps_per_epoch) if progress else None

    best = FitResult(best_epoch=0, best_val_accuracy=None)
    best_state = None
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        total, seen = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            loss = loss_fn(model, x_all[idx], y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach().item() * len(idx)
            seen += len(idx)
            if progress:
                progress.advance(task)
        if reconstruct:
            val_acc = -reconstruction_mse(model, val) if val is not None else None
        else:
            val_acc = accuracy(model, val) if val is not None and val.y is not None else None
        best.history.append({"epoch": epoch, "loss": total / seen, "val_accuracy": val_acc})
        if progress:
            shown = "n/a" if val_acc is None else f"{val_acc:.3f}"
            progress.update(task, description=f"train {epoch}/{config.epochs} loss {total / seen:.3f} val {shown}")
        if val_acc is None or best.best_val_accuracy is None or val_acc > best.best_val_accuracy:
            best.best_epoch, best.best_val_accuracy = epoch, val_acc
            best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return best
