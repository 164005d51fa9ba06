"""The decoder LLM and its LoRA (paper: Implementation Details).

The LLM is frozen in stage 1 and tuned through LoRA on all linear layers of
its transformer blocks from stage 2 on. LoRA is attached once, when the model
is built: its B matrices start at zero, so until a stage trains them the
wrapped model computes exactly what the frozen LLM does, and every checkpoint
can carry the adapter in PEFT's own format.
"""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_llm(
    name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False, key: str = "model.llm.name_or_path"
):
    """Load the causal LM and its tokenizer; make sure the tokenizer has a pad token.

    Llama-family hub folders (Vicuna) may hold only a sentencepiece
    ``tokenizer.model``; transformers converts it with the ``sentencepiece``
    and ``protobuf`` packages, both core dependencies.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s2d_align.models.loading import explain_load_errors

    with explain_load_errors(key, name_or_path):
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code
        )
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{name_or_path}: the tokenizer has no EOS token; reports could never end")
    if tokenizer.pad_token_id is None:  # Llama/Vicuna ship without one
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return model, tokenizer


def add_lora(model, r: int, alpha: int, dropout: float, target_modules):
    """Wrap the LLM with LoRA adapters (PEFT) and freeze everything of the base model."""
    from peft import LoraConfig, get_peft_model

    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    # PEFT resolves "all-linear" to a set, saved in hash order; sorted, adapter_config.json is the same in every process.
    resolved = model.peft_config["default"]
    resolved.target_modules = sorted(resolved.target_modules) if isinstance(resolved.target_modules, set) else resolved.target_modules
    return model
