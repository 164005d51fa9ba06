"""What trains in each stage of PAG (paper: Progressive Anatomical Grounding), decided here and only here.

==========================  =========================  ====================================
stage                       context                    trains
==========================  =========================  ====================================
S1 coarse alignment         Z_v                        M, phi_v
S2 contextual enhancement   Z_v + Z_r                  M, phi_v, phi_r, LoRA
S3 key-phrase grounding     Z_v + Z_r + Z_k            M, phi_v, phi_r, phi_k, LoRA
==========================  =========================  ====================================

A stage trains the shared memory, the adapter of every modality its contexts
use, and LoRA when the recipe says ``lora: true``. The encoders and the LLM's
own weights never train. The other curricula of the paper's Table 3 (S1 only,
joint, S1->S3->S2, S1->S2, S1->S3) are lists of stages in a recipe.
"""

from __future__ import annotations

from torch import nn

from s2d_align.config import StageConfig
from s2d_align.models.model import parse_context


def stage_contexts(stage: StageConfig) -> list[tuple[str, ...]]:
    if not stage.contexts:
        raise ValueError(f"stage {stage.name!r} lists no contexts")
    return [parse_context(c) for c in stage.contexts]


def trainable_groups(stage: StageConfig) -> set[str]:
    groups = {"memory"}
    for context in stage_contexts(stage):
        groups.update(context)
    if stage.lora:
        groups.add("lora")
    return groups


def trainable_names(model: nn.Module, stage: StageConfig) -> set[str]:
    """Full parameter names (as in ``model.named_parameters()``) that train in ``stage``."""
    groups = trainable_groups(stage)
    connector_groups = model.connector.parameter_groups()
    names = {f"connector.{n}" for g in groups & set(connector_groups) for n in connector_groups[g]}
    if "lora" in groups:
        names.update(n for n, _ in model.llm.named_parameters(prefix="llm") if "lora_" in n)
    return names


def apply_stage(model: nn.Module, stage: StageConfig) -> list[nn.Parameter]:
    """Freeze everything, unfreeze what ``stage`` trains; return those parameters in a stable order."""
    names = trainable_names(model, stage)
    params = []
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
        if name in names:
            params.append(param)
    return params
