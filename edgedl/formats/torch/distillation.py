"""The distillation loss the distill and qat stages train with."""

from __future__ import annotations


def kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross entropy with the labels."""
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                    reduction="batchmean") * (t * t)
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)
