"""The ``train`` stage: fit the model on the training split and save a checkpoint artifact."""

from __future__ import annotations

from edgedl.models import save_checkpoint
from edgedl.stages.base import RunContext, Stage
from edgedl.stages.benchmark import BENCH_METRICS
from edgedl.torch_utils import count_macs_params, progress_bar
from edgedl.train import FitConfig, fit


class TrainStage(Stage):
    name = "train"

    def run(self, ctx: RunContext) -> None:
        c = self.config
        config = FitConfig(
            epochs=c.epochs,
            lr=c.lr,
            batch_size=c.batch_size,
            weight_decay=c.weight_decay,
            optimizer=c.optimizer,
            label_smoothing=c.label_smoothing,
            seed=ctx.recipe.seed,
        )
        with progress_bar(ctx.console, enabled=ctx.progress) as progress:
            result = fit(ctx.model.module, ctx.dataset.train, ctx.dataset.val, config, progress=progress)
        tmp = ctx.run.tempdir() / f"{ctx.stem}.pt"
        save_checkpoint(
            tmp,
            ctx.model.module,
            ctx.model.arch,
            data=ctx.dataset.name,
            seed=ctx.recipe.seed,
            best_epoch=result.best_epoch,
            val_accuracy=result.best_val_accuracy,
        )
        macs, params = count_macs_params(ctx.model.module, ctx.dataset.input_shape)
        record = ctx.run.add_artifact(
            tmp,
            name=tmp.name,
            format="torch",
            precision="fp32",
            stage=self.name,
            parent=ctx.model_artifact,
            metrics={"params": params, "macs": macs},
            notes={
                "accuracy": "torch checkpoints are not evaluated: accuracy is measured on the "
                "exported artifacts through edgedl.runtime",
                **{key: "torch checkpoints are not benchmarked; see the exported artifacts"
                   for key in BENCH_METRICS},
            },
            extra={"training": {"best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy,
                                "history": result.history}},
        )
        ctx.model_artifact = record["name"]
        acc = result.best_val_accuracy
        ctx.log(f"trained {ctx.stem}: best epoch {result.best_epoch}, val accuracy "
                f"{'n/a' if acc is None else f'{acc:.4f}'}")
