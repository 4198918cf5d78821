"""The ``prune`` stage: structured channel pruning, fine-tuned between steps when data has labels."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgedl.artifacts import example_inputs
from edgedl.formats.torch.pruning import PruneSettings, prune
from edgedl.stages.base import RunContext, Stage, StageConfig
from edgedl.formats.torch.progress import progress_bar
from edgedl.train import FitConfig, call, fit, tensors


class PruneConfig(StageConfig):
    """Structured channel pruning (Torch-Pruning), with fine-tuning between steps when labelled."""

    stage: Literal["prune"]
    ratio: float = Field(0.5, gt=0, lt=1, description="fraction of channels removed")
    importance: Literal["l1", "l2", "bn_scale", "taylor"] = "l2"
    scope: Literal["uniform", "global"] = "uniform"
    ignore: list[str] = Field(default_factory=list, description="layer-name patterns to leave alone")
    round_to: int = Field(8, ge=1, description="keep channel counts multiples of this")
    steps: int = Field(1, ge=1)
    finetune_epochs: int = Field(5, ge=0, description="fine-tuning epochs after each step")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)


class PruneStage(Stage):
    name = "prune"
    Config = PruneConfig
    needs_torch = True

    def run(self, ctx: RunContext) -> None:
        import torch.nn.functional as F
        import torch

        ctx.require_torch(self.name)
        ctx.start_compression()
        c = self.config
        module, data = ctx.model.module, ctx.dataset
        reconstruct = ctx.task == "reconstruction"  # trained on its own input: no labels needed
        labeled = data.labeled and not reconstruct
        finetune = (labeled or reconstruct) and c.finetune_epochs > 0
        history: list[dict] = []

        def gradient_batch(model):
            x, y = tensors(data.train.x[:256]), torch.from_numpy(data.train.y[:256])
            return F.cross_entropy(call(model, x), y)

        with progress_bar(ctx.console, enabled=ctx.progress and finetune) as bar:
            def after_step(step: int) -> None:
                if finetune:
                    result = fit(module, data.train, data.val, FitConfig(
                        epochs=c.finetune_epochs, lr=c.lr, batch_size=c.batch_size, seed=ctx.recipe.seed + step),
                        progress=bar, task=ctx.task)
                    history.append({"step": step + 1, "val_accuracy": result.best_val_accuracy})

            result = prune(module, data.input_shape,
                           PruneSettings(ratio=c.ratio, importance=c.importance, scope=c.scope,
                                       ignore=tuple(c.ignore), round_to=c.round_to, steps=c.steps),
                           gradient_batch=gradient_batch if labeled else None, after_step=after_step,
                           example=example_inputs(ctx.model.inputs) if ctx.model.inputs else None)
        result["finetuned"] = finetune
        result["finetune"] = history
        if not finetune:
            why = "the data has no labels" if not labeled else "finetune_epochs is 0"
            result["note"] = f"pruned without fine-tuning: {why}"
            ctx.run.manifest["notes"].append(f"prune: {result['note']}")
        summary = (f"pruned, MACs {result['macs_before']:,} -> {result['macs_after']:,} ({result['mac_reduction']:.2f}x "
                   f"fewer), params {result['params_before']:,} -> {result['params_after']:,}"
                   + ("" if finetune else ", not fine-tuned (see the notes)"))
        ctx.save_model(".pruned", stage=self.name, pruning=result, summary=summary)
        ctx.log(f"pruned {ctx.stem}: MACs {result['macs_before']:,} -> {result['macs_after']:,} "
                f"({result['mac_reduction']:.2f}x fewer), params {result['params_before']:,} -> "
                f"{result['params_after']:,}" + ("" if finetune else f"; {result['note']}"))
