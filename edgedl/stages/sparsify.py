"""The ``sparsify`` stage: 2:4 semi-structured sparsity, fine-tuned with the masks held."""

from __future__ import annotations

from edgedl.errors import UsageError
from edgedl.stages.base import RunContext, Stage
from edgedl.torch_utils import progress_bar
from edgedl.train import FitConfig, fit


class SparsifyStage(Stage):
    name = "sparsify"

    def run(self, ctx: RunContext) -> None:
        from edgedl.pruning import output_layers
        from edgedl.sparsity import apply_2_4, finalize_2_4

        ctx.require_torch(self.name)
        ctx.start_compression()
        c, data, module = self.config, ctx.dataset, ctx.model.module
        layers = apply_2_4(module, skip=tuple(output_layers(module)))
        if not layers:
            raise UsageError("sparsify: no layer fits the 2:4 pattern (dense Conv2d/Linear with inputs per "
                             "output a multiple of 4)")
        finetuned = data.labeled and c.finetune_epochs > 0
        if finetuned:
            with progress_bar(ctx.console, enabled=ctx.progress) as bar:
                fit(module, data.train, data.val, FitConfig(epochs=c.finetune_epochs, lr=c.lr,
                                                            batch_size=c.batch_size, seed=ctx.recipe.seed), progress=bar)
        finalize_2_4(module)
        module.eval()
        info = {"pattern": "2:4", "layers": layers, "finetuned": finetuned,
                "note": "TensorRT on Ampere/Orin GPUs can run these weights on sparse tensor cores "
                        "(BuilderFlag.SPARSE_WEIGHTS); dense runtimes see no speed-up"}
        ctx.save_model(".sparse24", stage=self.name, sparsity=info)
        ctx.log(f"sparsified {len(layers)} layers to 2:4" + ("" if finetuned else " without fine-tuning"))
