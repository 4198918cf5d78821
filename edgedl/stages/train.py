"""The ``train`` stage: fit the model on the training split and save a checkpoint artifact."""

from __future__ import annotations

from edgedl.stages.base import RunContext, Stage
from edgedl.torch_utils import progress_bar
from edgedl.train import FitConfig, fit


class TrainStage(Stage):
    name = "train"

    def run(self, ctx: RunContext) -> None:
        ctx.require_torch(self.name)
        c = self.config
        config = FitConfig(epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, weight_decay=c.weight_decay,
                           optimizer=c.optimizer, label_smoothing=c.label_smoothing, seed=ctx.recipe.seed)
        with progress_bar(ctx.console, enabled=ctx.progress) as progress:
            result = fit(ctx.model.module, ctx.dataset.train, ctx.dataset.val, config, progress=progress)
        ctx.save_model("", stage=self.name, training={
            "best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy, "history": result.history})
        acc = result.best_val_accuracy
        ctx.log(f"trained {ctx.stem}: best epoch {result.best_epoch}, val accuracy "
                f"{'n/a' if acc is None else f'{acc:.4f}'}")
