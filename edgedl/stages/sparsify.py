"""The ``sparsify`` stage: 2:4 semi-structured sparsity, fine-tuned with the masks held."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgedl.errors import UsageError, counted
from edgedl.stages.base import RunContext, Stage, StageConfig
from edgedl.formats.torch.progress import progress_bar
from edgedl.train import FitConfig, fit


class SparsifyConfig(StageConfig):
    """2:4 semi-structured sparsity for TensorRT on Ampere/Orin, fine-tuned with the masks held."""

    stage: Literal["sparsify"]
    pattern: Literal["2:4"] = "2:4"
    finetune_epochs: int = Field(5, ge=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)


class SparsifyStage(Stage):
    name = "sparsify"
    Config = SparsifyConfig
    needs_torch = True

    def run(self, ctx: RunContext) -> None:
        from edgedl.formats.torch.pruning import output_layers
        from edgedl.formats.torch.sparsity import apply_2_4, finalize_2_4

        ctx.require_torch(self.name)
        ctx.start_compression()
        c, data, module = self.config, ctx.dataset, ctx.model.module
        layers = apply_2_4(module, skip=tuple(output_layers(module)))
        if not layers:
            raise UsageError("sparsify: no layer fits the 2:4 pattern (dense Conv2d/Linear with inputs per "
                             "output a multiple of 4)")
        finetuned = (data.labeled or ctx.task == "reconstruction") and c.finetune_epochs > 0
        if finetuned:
            with progress_bar(ctx.console, enabled=ctx.progress) as bar:
                fit(module, data.train, data.val, FitConfig(epochs=c.finetune_epochs, lr=c.lr,
                                                            batch_size=c.batch_size, seed=ctx.recipe.seed), progress=bar,
                    task=ctx.task)
        finalize_2_4(module)
        module.eval()
        info = {"pattern": "2:4", "layers": layers, "finetuned": finetuned,
                "note": "TensorRT on Ampere/Orin GPUs can run these weights on sparse tensor cores "
                        "(BuilderFlag.SPARSE_WEIGHTS); dense runtimes see no speed-up"}
        summary = f"2:4 sparse in {counted(len(layers), 'layer')}" + ("" if finetuned else ", not fine-tuned")
        ctx.save_model(".sparse24", stage=self.name, sparsity=info, summary=summary)
        ctx.log(f"sparsified {counted(len(layers), 'layer')} to 2:4" + ("" if finetuned else " without fine-tuning"))
