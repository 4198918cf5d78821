"""The ``train`` stage: fit the model on the training split and save a checkpoint artifact."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgedl.stages.base import RunContext, Stage, StageConfig
from edgedl.formats.torch.progress import progress_bar
from edgedl.train import FitConfig, fit


class TrainConfig(StageConfig):
    """Train the model from its current weights on the training split."""

    stage: Literal["train"]
    epochs: int = Field(10, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class TrainStage(Stage):
    name = "train"
    Config = TrainConfig
    needs_torch = True

    def run(self, ctx: RunContext) -> None:
        ctx.require_torch(self.name)
        if ctx.task == "embedding":
            from edgedl.errors import StageError

            raise StageError("an embedding model learns from pairs or contrasts with its own training code; edgedl "
                             "trains classifiers and autoencoders: fine-tune it where it was made and bring the folder")
        c = self.config
        config = FitConfig(epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, weight_decay=c.weight_decay,
                           optimizer=c.optimizer, label_smoothing=c.label_smoothing, seed=ctx.recipe.seed)
        with progress_bar(ctx.console, enabled=ctx.progress) as progress:
            result = fit(ctx.model.module, ctx.dataset.train, ctx.dataset.val, config, progress=progress, task=ctx.task)
        ctx.save_model("", stage=self.name, training={
            "best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy, "history": result.history})
        acc = result.best_val_accuracy
        if ctx.task == "reconstruction":
            ctx.log(f"trained {ctx.stem}: best epoch {result.best_epoch}, val reconstruction MSE {-acc:.4g}")
            return
        ctx.log(f"trained {ctx.stem}: best epoch {result.best_epoch}, val accuracy "
                f"{'n/a' if acc is None else f'{acc:.4f}'}")
