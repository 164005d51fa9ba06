"""CPU time of the model metrics (BERTScore, SembScore) on the report pairs of ``bench_evaluate.py``.

No model can be downloaded here, so the models are random but real-shaped:
BERTScore's encoder has distilroberta-base's shape (6 layers, hidden 768,
12 heads, 3072 intermediate, 50,265-token vocabulary; layer 5 is read) and
SembScore's CheXbert has bert-base-uncased's (12 layers, hidden 768, 30,522
tokens). The tokenizers are trained on the benchmark's own reports (byte-level
BPE for RoBERTa, WordPiece for BERT), so a report splits into about as many
tokens as with the real vocabularies. The compute per token is the real
models'; only the numbers they produce are meaningless.

CPU time is ``time.process_time()`` (all threads of the process), wall time
``time.perf_counter()``, for ``model_metrics.score`` of each metric alone,
model loading included. Use ``--pairs`` below 3,858 on a small machine: the
cost is linear in the number of distinct reports, and the script prints the
per-pair figures and their extrapolation to 3,858 pairs.

    PYTHONPATH=src python benchmarks/bench_model_metrics.py [--pairs 3858] [--seed 0] [--threads N] [--only bertscore|semb]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_evaluate  # noqa: E402

FULL = 3858


def build_models(root: Path, texts: list[str]) -> tuple[Path, Path]:
    import torch
    from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer
    from transformers import BertConfig, BertTokenizer, RobertaConfig, RobertaModel, RobertaTokenizer

    from s2d_align.evaluation.labelers.chexbert import CheXbert

    roberta = root / "distilroberta-base"
    roberta.mkdir(parents=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=8000, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(roberta))
    vocab = json.loads((roberta / "vocab.json").read_text())
    merges = [tuple(x.split()) for x in (roberta / "merges.txt").read_text().splitlines()[1:] if x]
    RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=512).save_pretrained(roberta)
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                               intermediate_size=3072, max_position_embeddings=514, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2)).save_pretrained(roberta)

    chexbert = root / "chexbert"
    chexbert.mkdir()
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=8000, min_frequency=2)
    wordpiece.save_model(str(chexbert))
    BertTokenizer(str(chexbert / "vocab.txt"), model_max_length=512).save_pretrained(chexbert)
    config = BertConfig()  # bert-base-uncased: 12 layers, hidden 768, vocabulary 30,522
    config.save_pretrained(chexbert)
    model = CheXbert(config)
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               chexbert / "chexbert.pth")
    return roberta, chexbert


def main(argv: list[str] | None = None) -> None:
    import torch

    from s2d_align.evaluation import model_metrics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=FULL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["bertscore", "semb"], help="time one metric")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    records = bench_evaluate.pairs(args.pairs, args.seed)
    references = [r["reference"] for r in records]
    predictions = [r["prediction"] for r in records]
    distinct = len(set(references + predictions))
    with tempfile.TemporaryDirectory() as tmp:
        training = [r["reference"] for r in bench_evaluate.pairs(2000, args.seed + 1)]  # tokenizers: other reports
        roberta, chexbert = build_models(Path(tmp), training)
        models = {"bertscore": str(roberta), "semb": str(chexbert)}
        model_metrics.check(("bertscore", "semb"), models)
        print(f"{len(records)} pairs, {distinct} distinct reports; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, device {args.device}")
        for name in (args.only,) if args.only else ("bertscore", "semb"):
            cpu, wall = time.process_time(), time.perf_counter()
            result = model_metrics.score((name,), references, predictions, {name: models[name]}, args.device)[name]
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            scale = FULL / len(records)
            print(f"{name:10s} CPU {cpu:8.1f} s  wall {wall:8.1f} s  ({1000 * cpu / len(records):.1f} ms CPU/pair; "
                  f"at {FULL} pairs ~{cpu * scale:.0f} s CPU, ~{wall * scale:.0f} s wall)  mean {result.scores()[name]:.4f}")


if __name__ == "__main__":
    main()
