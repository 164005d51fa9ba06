"""Config-only folders of Rad-DINO, CXR-BERT and Vicuna-7B v1.5 (all 32 layers), for ``s2d-align plan`` offline.

``plan`` reads shapes from each base model's ``config.json`` and counts the
prompt's tokens with the LLM's tokenizer; it never loads a weight. Where the
hub cannot be reached, this writes the three configs (the values of their hub
``config.json``) and copies the LLM tokenizer files from ``--tokenizer``
(Vicuna's own folder if you have it; any Llama-family tokenizer otherwise,
which shifts the prompt's token count by a few tokens).

    python benchmarks/plan_config_folders.py --out /tmp/base_configs --tokenizer runs/demo/base_models/llm
    s2d-align plan --config mimic_cxr/s2d_align --gpu-memory 80 \\
        model.vision.name_or_path=/tmp/base_configs/rad-dino \\
        model.text.name_or_path=/tmp/base_configs/cxr-bert model.llm.name_or_path=/tmp/base_configs/vicuna-7b
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import CXR_BERT, RAD_DINO, VICUNA_7B  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def main(argv=None) -> int:
    from transformers import BertConfig, Dinov2Config, LlamaConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tokenizer", required=True, help="folder whose LLM tokenizer files are copied")
    args = parser.parse_args(argv)
    out = Path(args.out)
    Dinov2Config(**RAD_DINO).save_pretrained(out / "rad-dino")
    BertConfig(**CXR_BERT).save_pretrained(out / "cxr-bert")
    LlamaConfig(**VICUNA_7B).save_pretrained(out / "vicuna-7b")
    copied = [f for f in TOKENIZER_FILES if (Path(args.tokenizer) / f).is_file()]
    if not copied:
        parser.error(f"{args.tokenizer}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    for name in copied:
        shutil.copy(Path(args.tokenizer) / name, out / "vicuna-7b" / name)
    print(f"wrote {out}/rad-dino, {out}/cxr-bert, {out}/vicuna-7b (tokenizer from {args.tokenizer}: {', '.join(copied)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
