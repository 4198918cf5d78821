"""Structured channel pruning through Torch-Pruning's dependency graph.

The only module that calls ``torch_pruning``; the rest of edgedl sees plain torch modules.
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from edgedl.errors import UsageError

IMPORTANCE = ("l1", "l2", "bn_scale", "taylor")


@dataclass
class PruneSettings:
    ratio: float = 0.5  # fraction of channels removed from each prunable group (uniform) or overall (global)
    importance: str = "l2"
    scope: str = "uniform"  # or "global"
    ignore: tuple[str, ...] = ()  # module-name patterns to leave alone
    round_to: int = 8
    steps: int = 1


def count_macs_params(module: Any, input_shape: tuple[int, ...] | None, example: Any = None) -> tuple[int | None, int]:
    """MACs and parameters for one sample, counted by Torch-Pruning's op counter (``example``: the
    inputs, for a model of several or of integer inputs). A module the counter cannot trace
    (TorchScript, an exported graph) gets its parameters counted and MACs None: the ONNX export
    counts them."""
    import torch
    import torch_pruning as tp

    params = sum(p.numel() for p in module.parameters())
    if isinstance(module, (torch.jit.ScriptModule, torch.fx.GraphModule)):
        return None, int(params)
    from torch_pruning.utils import op_counter

    example = example if example is not None else torch.zeros(1, *input_shape)
    was_training = module.training
    module.eval()
    # The counter hooks layers by exact type: a subclass of Conv2d (efficientnet_pytorch's and timm's
    # same-padding convolutions) would count as zero. Such convolutions and linear layers count as the
    # layer they are (their hooks read only the layer's sizes and its output); should that fail on some
    # subclass, the count is made as before.
    nn = torch.nn
    layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
    subclassed = subclassed_layers(module, {k: v for k, v in op_counter.MODULES_MAPPING.items() if k in layers})
    try:
        for mapping in ([subclassed] if subclassed else []) + [{}]:
            op_counter.CUSTOM_MODULES_MAPPING = mapping
            try:
                macs, params = tp.utils.count_ops_and_params(module, example)
                break
            except Exception:
                if not mapping:
                    raise
    finally:
        op_counter.CUSTOM_MODULES_MAPPING = {}
        module.train(was_training)
    return int(macs), int(params)


def subclassed_layers(module: Any, known: dict) -> dict:
    """The counter's hook for each module type in ``module`` that subclasses a type ``known`` has
    (the nearest such base) without being one itself."""
    out = {}
    for kind in {type(m) for m in module.modules()} - set(known):
        base = next((b for b in kind.__mro__[1:] if b in known), None)
        if base is not None:
            out[kind] = known[base]
    return out


def output_layers(model: Any) -> list[Any]:
    """The layer(s) producing the model's output: pruning them would change the output size."""
    import torch

    leaves = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d,
                                                            torch.nn.ConvTranspose2d))]
    return leaves[-1:]


def unprunable(model: Any) -> str | None:
    """Why Torch-Pruning cannot prune this model as edgedl drives it, or None.

    - Attention (transformers' modules): Torch-Pruning prunes heads only with per-model bookkeeping
      (``num_heads`` and the module's own head sizes updated after), which edgedl does not do yet:
      channel pruning would cut a head's width and break its reshape.
    - Recurrent layers: Torch-Pruning 1.6 prunes single-layer LSTMs only (and fails on them inside
      a model's dependency graph here); GRUs not at all. edgedl leaves them alone, so a model that is
      one recurrent layer and its head has nothing left to prune.
    """
    import torch

    modules = list(model.modules())
    attention = [m for m in modules if type(m).__module__.startswith("transformers.") and "Attention" in type(m).__name__]
    if attention and not attention_heads(model):
        return (f"its attention ({type(attention[0]).__name__}) is not one edgedl can prune by whole heads (it needs "
                "query, key and value projections and a head count): quantize it, or distill it into a smaller config")
    recurrent = [type(m).__name__ for m in modules if isinstance(m, torch.nn.RNNBase)]
    if recurrent:
        prunable = [m for m in modules if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))]
        if len(prunable) <= len(output_layers(model)):
            return (f"its {recurrent[0]} layer is all there is to prune, and Torch-Pruning does not prune "
                    f"{recurrent[0]}s inside a model's graph (1.6 handles a lone LSTM only): compress it with "
                    "a smaller hidden size (distillation) or dynamic INT8")
    return None


_QKV = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))


def attention_heads(model: Any) -> dict:
    """``{projection: heads}`` for every query, key and value projection of transformers' attention
    (ViT's q_proj/k_proj/v_proj, BERT's query/key/value): Torch-Pruning's ``num_heads``, so that it
    removes whole heads together. Empty when some attention module does not have that shape."""
    heads: dict = {}
    for module in model.modules():
        if not (type(module).__module__.startswith("transformers.") and "Attention" in type(module).__name__):
            continue
        count = getattr(module, "num_attention_heads", None)
        names = next((n for n in _QKV if all(hasattr(module, p) for p in n)), None)
        if names is None:
            if any(hasattr(child, "num_attention_heads") for child in module.children()):
                continue  # a wrapper (BertAttention) around the module that holds the projections
            return {}
        if not isinstance(count, int):
            return {}
        heads.update({getattr(module, p): count for p in names})
    return heads


def _fixed_width(model: Any, heads: dict) -> list[Any]:
    """Layers that write a transformer's residual stream (its hidden width, kept: every block adds into
    it) and its embeddings; whole attention heads and the MLPs' inner width are what gets pruned."""
    import torch

    if not heads:
        return []
    hidden = next(iter(heads)).in_features
    fixed = []
    for module in model.modules():
        out = getattr(module, "out_features", getattr(module, "out_channels", getattr(module, "embedding_dim", None)))
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding)) and out == hidden \
                and module not in heads:
            fixed.append(module)
    return fixed


def _after_head_pruning(model: Any, heads: dict) -> None:
    """Each attention module's own head count and width, from its pruned query projection."""
    for module in model.modules():
        names = next((n for n in _QKV if all(hasattr(module, p) for p in n)), None)
        if names is None or not isinstance(getattr(module, "num_attention_heads", None), int):
            continue
        width = getattr(module, names[0]).out_features
        size = getattr(module, "head_dim", None) or getattr(module, "attention_head_size", None)
        if size:
            module.num_attention_heads = width // size
        if hasattr(module, "all_head_size"):
            module.all_head_size = width


def recurrent_layers(model: Any) -> list[Any]:
    """GRU/LSTM/RNN layers, left alone by pruning (see :func:`unprunable`)."""
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.RNNBase)]


def _importance(name: str):
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    if name == "taylor":
        return tp.importance.TaylorImportance()
    raise UsageError(f"prune.importance '{name}' is unknown; use one of {', '.join(IMPORTANCE)}")


def prune(
    model: Any,
    input_shape: tuple[int, ...],
    config: PruneSettings,
    gradient_batch: Callable[[Any], Any] | None = None,
    after_step: Callable[[int], None] | None = None,
    example: Any = None,
) -> dict:
    """Prune ``model`` in place, in ``config.steps`` steps.

    Args:
        model: a torch module.
        input_shape: one sample's shape, to trace the dependency graph.
        config: ratio, importance, scope, layers to ignore, channel rounding, steps.
        gradient_batch: ``f(model) -> loss`` on a labelled batch; Taylor importance needs it.
        after_step: called after each pruning step (fine-tuning goes here).
        example: the inputs to trace with (a tuple for several, or integer ids); zeros of
            ``input_shape`` when None.

    Returns:
        MACs and parameters before and after, and the layers left alone.
    """
    import torch
    import torch_pruning as tp

    if not 0 < config.ratio < 1:
        raise UsageError(f"prune.ratio must be between 0 and 1 (exclusive), got {config.ratio}")
    if config.importance == "taylor" and gradient_batch is None:
        raise UsageError("prune.importance 'taylor' needs labelled data for gradients; use l1, l2 or bn_scale")
    if config.importance == "bn_scale" and not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise UsageError("prune.importance 'bn_scale' needs BatchNorm layers, and this model has none; use l1 or l2")
    why = unprunable(model)
    if why:
        from edgedl.errors import StageError

        raise StageError(f"cannot prune this model: {why}")
    named = dict(model.named_modules())
    heads = attention_heads(model)
    ignored, ignored_names = list(output_layers(model)) + recurrent_layers(model) + _fixed_width(model, heads), []
    for pattern in config.ignore:
        hits = [n for n in named if n and fnmatch.fnmatch(n, pattern)]
        if not hits:
            raise UsageError(f"prune.ignore pattern '{pattern}' matches no layer; layer names look like "
                             f"{', '.join(n for n in list(named)[1:6])}")
        ignored += [named[n] for n in hits]
        ignored_names += hits
    ignored_names += [n for n, m in named.items() if m in ignored[:1]]

    example = example if example is not None else torch.zeros(1, *input_shape)
    macs_before, params_before = count_macs_params(model, input_shape, example)
    model.eval()
    head_options = {"num_heads": heads, "prune_num_heads": True, "prune_head_dims": False,
                    "head_pruning_ratio": config.ratio} if heads else {}  # whole heads: each keeps its width
    heads_before = sum(heads.values()) // 3
    with warnings.catch_warnings():
        if heads:  # the class token and position table follow the hidden width, which stays whole
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=_importance(config.importance),
            pruning_ratio=config.ratio,
            global_pruning=config.scope == "global",
            iterative_steps=config.steps,
            ignored_layers=ignored,
            round_to=config.round_to if config.round_to > 1 else None,
            **head_options,
        )
    for step in range(config.steps):
        if config.importance == "taylor":
            model.zero_grad()
            gradient_batch(model).backward()
        pruner.step()
        _after_head_pruning(model, heads)
        model.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step(step)
    model.eval()
    macs_after, params_after = count_macs_params(model, input_shape, example)
    return {
        "macs_before": macs_before,
        "macs_after": macs_after,
        "params_before": params_before,
        "params_after": params_after,
        "mac_reduction": macs_before / max(1, macs_after),
        "ignored_layers": sorted(set(ignored_names)),
        **({"attention_heads": {"before": heads_before, "after": sum(attention_heads(model).values()) // 3,
                                "pruned": "whole heads (each keeps its width); the hidden width is kept"}}
           if heads else {}),
    }
