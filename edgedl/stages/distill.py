"""The ``distill`` stage: train a student against a teacher's softened logits (and features)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from edgedl.artifacts import model_kwargs

from edgedl.errors import StageError, UsageError
from edgedl.stages.base import RunContext, Stage, StageConfig
from edgedl.formats.torch.distillation import kd_loss
from edgedl.formats.torch.progress import progress_bar
from edgedl.train import FitConfig, accuracy, call, fit, tensors


class FeatureMatcher:
    """Captures named layers' outputs with hooks and projects student features onto the teacher's."""

    def __init__(self, teacher: Any, student: Any, pairs: list, sample: Any):
        import torch
        from torch import nn

        self.pairs = [(p.teacher, p.student) for p in pairs]
        self.captured: dict[str, Any] = {}
        t_modules, s_modules = dict(teacher.named_modules()), dict(student.named_modules())
        for role, modules, names in (("teacher", t_modules, [p[0] for p in self.pairs]),
                                     ("student", s_modules, [p[1] for p in self.pairs])):
            for name in names:
                if name not in modules or not name:
                    known = ", ".join(n for n in list(modules)[1:8])
                    raise UsageError(f"distill.features: the {role} has no layer '{name}'; layers look like {known}")
                modules[name].register_forward_hook(self._hook(f"{role}:{name}"))
        with torch.no_grad():
            teacher.eval()(sample)
            student.eval()(sample)
        self.projections = nn.ModuleList()
        for t_name, s_name in self.pairs:
            t_feat, s_feat = self.captured[f"teacher:{t_name}"], self.captured[f"student:{s_name}"]
            if t_feat.dim() != s_feat.dim():
                raise UsageError(f"distill.features: teacher '{t_name}' gives {t_feat.dim()}-D features, "
                                 f"student '{s_name}' {s_feat.dim()}-D; pair layers of the same kind")
            cls = nn.Conv2d if t_feat.dim() == 4 else None
            proj = cls(s_feat.shape[1], t_feat.shape[1], 1) if cls else nn.Linear(s_feat.shape[1], t_feat.shape[1])
            self.projections.append(proj)

    def _hook(self, key: str):
        def hook(module, inputs, output):
            self.captured[key] = output
        return hook

    def loss(self):
        import torch.nn.functional as F

        total = 0.0
        for proj, (t_name, s_name) in zip(self.projections, self.pairs):
            t_feat = self.captured[f"teacher:{t_name}"].detach()
            s_feat = proj(self.captured[f"student:{s_name}"])
            if s_feat.dim() == 4 and s_feat.shape[-2:] != t_feat.shape[-2:]:
                s_feat = F.adaptive_avg_pool2d(s_feat, t_feat.shape[-2:])
            total = total + F.mse_loss(s_feat, t_feat)
        return total


class FeaturePair(StageConfig):
    """Match a student layer's output to a teacher layer's through a learned 1x1 projection."""

    teacher: str
    student: str


class DistillConfig(StageConfig):
    """Knowledge distillation: KL on softened logits plus hard-label cross entropy."""

    stage: Literal["distill"]
    teacher: Optional[str] = Field(None, description="model spec; default: the model before compression")
    student: Optional[str] = Field(None, description="registry name for a fresh student; default: current model")
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the distillation term")
    features: list[FeaturePair] = Field(default_factory=list)
    feature_weight: float = Field(1.0, ge=0)
    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)


class DistillStage(Stage):
    name = "distill"
    Config = DistillConfig
    needs_torch = True

    def run(self, ctx: RunContext) -> None:
        import torch

        from edgedl.models import LoadedModel, load_model

        ctx.require_torch(self.name)
        if ctx.task != "classification":
            raise StageError(f"distill matches a teacher's class probabilities, and this model's task is {ctx.task}: "
                             "train a smaller configuration (fewer channels or layers) of it instead")
        ctx.start_compression()
        c, data = self.config, ctx.dataset
        if not data.labeled:
            raise UsageError("distill needs labelled training data; this dataset has none")
        if c.teacher:
            teacher = load_model(c.teacher, trust_model_code=ctx.trust_model_code, **model_kwargs(data)).module
            teacher_name = c.teacher
        else:
            teacher = ctx.load_checkpoint(ctx.run.artifact(ctx.baseline_artifact)).module
            teacher_name = ctx.baseline_artifact
        teacher.eval().requires_grad_(False)
        if c.student:
            ctx.model = load_model(c.student, **model_kwargs(data))
        student = ctx.model.module
        sample = tensors(data.train.x[:2])  # one tensor, or a text model's ids and mask
        with torch.no_grad():
            t_out, s_out = call(teacher, sample), call(student.eval(), sample)
        if t_out.shape != s_out.shape:
            raise UsageError(f"distill.teacher '{teacher_name}' outputs shape {tuple(t_out.shape)} but the student "
                             f"outputs {tuple(s_out.shape)}; they must match")
        matcher = FeatureMatcher(teacher, student, c.features, sample) if c.features else None

        def loss_fn(model, xb, yb):
            with torch.no_grad():
                t_logits = call(teacher, xb)
            loss = kd_loss(call(model, xb), t_logits, yb, c.temperature, c.alpha)
            return loss + c.feature_weight * matcher.loss() if matcher else loss

        with progress_bar(ctx.console, enabled=ctx.progress) as bar:
            result = fit(student, data.train, data.val,
                         FitConfig(epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, seed=ctx.recipe.seed),
                         loss_fn=loss_fn, progress=bar,
                         extra_params=list(matcher.projections.parameters()) if matcher else None)
        info = {"teacher": teacher_name, "student": c.student or ctx.model_artifact, "temperature": c.temperature,
                "alpha": c.alpha, "features": [p.model_dump() for p in c.features],
                "teacher_val_accuracy": accuracy(teacher, data.val), "val_accuracy": result.best_val_accuracy}
        ctx.model = LoadedModel(student, ctx.model.arch, inputs=ctx.model.inputs, hf=ctx.model.hf)  # same inputs, task
        summary = (f"distilled from `{teacher_name}` (T={c.temperature}, alpha={c.alpha}), val accuracy "
                   f"{result.best_val_accuracy:.4f}, teacher {info['teacher_val_accuracy']:.4f}")
        ctx.save_model(".distilled", stage=self.name, distillation=info, summary=summary)
        ctx.log(f"distilled from {teacher_name}: val accuracy {result.best_val_accuracy:.4f} "
                f"(teacher {info['teacher_val_accuracy']:.4f})")
