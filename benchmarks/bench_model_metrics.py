"""CPU time of the model metrics on the report pairs of ``bench_evaluate.py`` (issue 11: the default set without GREEN).

No model can be downloaded here, so the models are random but real-shaped,
written in the layouts ``--metric-model`` reads (``model_metrics.LOCAL_LAYOUT``;
the tiny test stand-ins of ``tests/evaluation/conftest.py``, at full size):

- ``bertscore``: distilroberta-base (6 layers, hidden 768, 12 heads, 3072
  intermediate, 50,265-token vocabulary; layer 5 is read);
- ``semb``: CheXbert on bert-base-uncased (12 layers, hidden 768, 30,522
  tokens) with its 14 heads;
- ``radgraph``: a RadGraph-XL archive (``radgraph-xl/``: DyGIE on a BERT-base
  encoder, spans up to 8 words, width features of 20, feed-forward heads of
  2 x 150 as in DyGIE++'s template that RadGraph was trained with; RadGraph's
  4 entity and 3 relation labels), loaded and run by RadEval's RadGraph;
- ``radcliq``: a RadGraph v1 archive of the same shape (``radgraph/``), the
  CheXbert and the distilroberta-base above, run by RadEval's CompositeMetric;
- ``ratescore``: RaTE-NER-Deberta as DeBERTa-v3-base token classification
  (12 layers, hidden 768, relative attention, 128,100-token vocabulary, the
  11 B-/I-/O tags) and BioLORD-2023-C as MPNet-base (12 layers, hidden 768).

The tokenizers are trained on 2,000 other reports of the same generator
(byte-level BPE for RoBERTa, WordPiece for the BERTs and MPNet, a unigram
vocabulary of the frequent words for DeBERTa), so a report splits into about
as many tokens as with the real vocabularies (77 WordPiece or unigram tokens
for a 67-word reference; the real, more general vocabularies split rare
medical words further, so real counts are a little higher). The compute per
token is the real models'; only the numbers they produce are meaningless.
One cost depends on what a model predicts and so is only roughly real:
RaTEScore embeds each entity its NER finds; the random NER's "O" bias is
set so that 30% of the tokens get an entity tag, about 12 entities per
reference (the script prints the count). RadGraph's work is fixed by the
report's length: it scores every span of up to 8 words and keeps a fixed
share of them for relations.

CPU time is ``time.process_time()`` (all threads of the process), wall time
``time.perf_counter()``, for ``model_metrics.score`` of each metric alone,
model loading included (loading is timed apart too). Use ``--pairs`` below
3,858 on a small machine: apart from loading, the cost is linear in the
number of reports (BERTScore and SembScore in the distinct ones; RadGraph,
RadCliQ and RaTEScore run every reference and prediction), so the script
prints per-pair figures and (CPU - load) x 3,858 / pairs + load, the
extrapolation to 3,858 pairs. A subset has as many distinct reports per pair
as the full set (the generator's reports are nearly all distinct).

    PYTHONPATH=src python benchmarks/bench_model_metrics.py [--pairs 3858] [--seed 0] [--threads N]
        [--only bertscore|semb|radgraph|radcliq|ratescore]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests.evaluation.conftest: the stand-ins' layouts

import bench_evaluate  # noqa: E402

FULL = 3858
METRICS = ("bertscore", "semb", "radgraph", "radcliq", "ratescore")
VOCAB = 8000  # trained vocabulary; the embedding matrices keep the real vocabulary sizes
TAGGED = 0.3  # share of tokens the random RaTE-NER tags (see write_rate_ner and the entities it prints)


def write_wordpiece(folder: Path, texts: list[str],
                    specials: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")) -> Path:
    from tokenizers import BertWordPieceTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=VOCAB, min_frequency=2, special_tokens=list(specials))
    wordpiece.save_model(str(folder))
    return folder / "vocab.txt"


def write_roberta(folder: Path, texts: list[str]) -> Path:
    """distilroberta-base's shape, with a byte-level BPE trained on ``texts``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    folder.mkdir(parents=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=VOCAB, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    merges = [tuple(x.split()) for x in (folder / "merges.txt").read_text().splitlines()[1:] if x]
    RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=512).save_pretrained(folder)
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                               intermediate_size=3072, max_position_embeddings=514, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2)).save_pretrained(folder)
    return folder


def write_bert(folder: Path, texts: list[str]) -> Path:
    """A bert-base-uncased config (12 layers, hidden 768, 30,522 tokens) and a WordPiece trained on ``texts``."""
    from transformers import BertConfig, BertTokenizer

    vocab = write_wordpiece(folder, texts)
    BertTokenizer(str(vocab), model_max_length=512).save_pretrained(folder)
    BertConfig().save_pretrained(folder)
    return folder


def write_chexbert(folder: Path, texts: list[str]) -> Path:
    import torch

    from s2d_align.evaluation.labelers.chexbert import CheXbert
    from transformers import BertConfig

    write_bert(folder, texts)
    torch.manual_seed(1)
    model = CheXbert(BertConfig.from_pretrained(folder))
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               folder / "chexbert.pth")
    return folder


def write_radgraph(folder: Path, bert: Path) -> Path:
    """A RadGraph archive folder (named after its model type) of DyGIE at DyGIE++'s sizes on the BERT-base ``bert``."""
    from tests.evaluation.conftest import write_radgraph as write_archive

    return write_archive(folder, bert, seed=0, feature_size=20, max_span_width=8, hidden_dims=150)


def unigram_pieces(texts: list[str]) -> list[tuple[str, float]]:
    """A SentencePiece unigram vocabulary over ``texts``: every word seen twice as one piece, scored by its
    frequency, and single characters to spell the rest -- as DeBERTa-v3's 128k vocabulary holds common words.

    (``tokenizers``' unigram trainer keeps only ~500 pieces of these templated reports and spells most words
    letter by letter, three times the real token count.)
    """
    import math
    import re
    from collections import Counter

    counts = Counter(("\u2581" if space else "") + word for text in texts
                     for space, word in re.findall(r"(\s?)(\w+|[^\w\s])", " " + text))
    total = sum(counts.values())
    words = [(piece, math.log(n / total)) for piece, n in counts.most_common(VOCAB) if n >= 2]
    known = {piece for piece, _ in words}
    chars = sorted({c for text in texts for c in text if not c.isspace()} | {"\u2581"})
    return [(s, 0.0) for s in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] + words + \
        [(c, -20.0) for c in chars if c not in known]


def write_rate_ner(folder: Path, texts: list[str]) -> Path:
    """RaTE-NER-Deberta's shape: DeBERTa-v3-base token classification over RaTEScore's B-/I- tags and "O"."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForTokenClassification, DebertaV2Tokenizer

    from tests.evaluation.conftest import RATE_TYPES

    folder.mkdir(parents=True)
    tokenizer = DebertaV2Tokenizer(vocab=unigram_pieces(texts), unk_id=1, model_max_length=512)
    tokenizer.save_pretrained(folder)
    labels = ["O", *(f"{p}-{t}" for t in RATE_TYPES for p in ("B", "I"))]
    config = DebertaV2Config(vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                             intermediate_size=3072, max_position_embeddings=512, relative_attention=True,
                             position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
                             pos_att_type=["p2c", "c2p"], layer_norm_eps=1e-7, max_relative_positions=-1,
                             position_biased_input=False, type_vocab_size=0, pad_token_id=tokenizer.pad_token_id,
                             id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    torch.manual_seed(2)
    model = DebertaV2ForTokenClassification(config)
    with torch.no_grad():  # "O" biased so that TAGGED of the tokens of these reports get an entity tag
        model.classifier.bias.zero_()
        encoded = tokenizer(texts[:20], truncation=True, padding=True, return_tensors="pt")
        logits = model.eval()(**encoded).logits
        margin = (logits[..., 1:].max(-1).values - logits[..., 0])[encoded["attention_mask"].bool()]
        model.classifier.bias[0] = torch.quantile(margin, 1 - TAGGED)
    model.save_pretrained(folder)
    return folder


def write_biolord(folder: Path, texts: list[str]) -> Path:
    """BioLORD-2023-C's shape: MPNet-base (all-mpnet-base-v2's) with a WordPiece trained on ``texts``."""
    import torch
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    vocab = write_wordpiece(folder, texts, ("<s>", "<pad>", "</s>", "[UNK]", "<mask>"))
    tokenizer = MPNetTokenizer(str(vocab), model_max_length=512)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(3)
    MPNetModel(MPNetConfig(vocab_size=30527, max_position_embeddings=514, pad_token_id=1)).save_pretrained(folder)
    return folder


def build(name: str, root: Path, texts: list[str]) -> Path:
    """The ``--metric-model`` folder of one metric."""
    if name == "bertscore":
        return write_roberta(root / "distilroberta-base", texts)
    if name == "semb":
        return write_chexbert(root / "chexbert", texts)
    if name == "radgraph":
        return write_radgraph(root / "radgraph-xl", write_bert(root / "radgraph-xl-bert", texts))
    if name == "radcliq":
        folder = root / "radcliq"
        write_roberta(folder / "distilroberta-base", texts)
        write_chexbert(folder / "chexbert", texts)
        write_radgraph(folder / "radgraph", write_bert(root / "radgraph-bert", texts))
        return folder
    if name == "ratescore":
        folder = root / "ratescore"
        write_rate_ner(folder / "RaTE-NER-Deberta", texts)
        write_biolord(folder / "BioLORD-2023-C", texts)
        return folder
    raise ValueError(name)


def entities_per_report(folder: Path, texts: list[str]) -> float:
    """How many entities the random RaTE-NER finds in a report (each is embedded by BioLORD), on a few reports."""
    from radeval.metrics.RaTEScore.score import run_ner
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    ner = folder / "RaTE-NER-Deberta"
    model = AutoModelForTokenClassification.from_pretrained(ner).eval()
    pairs = run_ner(texts, model.config.id2label, AutoTokenizer.from_pretrained(ner), model, "cpu", 1)
    return sum(len(p) for p in pairs) / len(pairs)


def main(argv: list[str] | None = None) -> None:
    import torch

    from s2d_align.evaluation import model_metrics, radeval_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=FULL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=METRICS, help="time one metric")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    records = bench_evaluate.pairs(args.pairs, args.seed)
    references = [r["reference"] for r in records]
    predictions = [r["prediction"] for r in records]
    distinct = len(set(references + predictions))
    names = (args.only,) if args.only else METRICS
    with tempfile.TemporaryDirectory() as tmp:
        training = [r["reference"] for r in bench_evaluate.pairs(2000, args.seed + 1)]  # tokenizers: other reports
        with radeval_models.quiet_import():
            models = {name: str(build(name, Path(tmp), training)) for name in names}
        model_metrics.check(names, models)
        print(f"{len(records)} pairs, {distinct} distinct reports; torch {torch.__version__}, "
              f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, device {args.device}")
        if "ratescore" in names:
            print(f"ratescore: the random RaTE-NER finds {entities_per_report(Path(models['ratescore']), references[:10]):.1f} "
                  "entities per reference (first 10)")
        scale = FULL / len(records)
        for name in names:
            cpu, wall = time.process_time(), time.perf_counter()
            scorers = model_metrics.load((name,), {name: models[name]}, args.device)
            load_cpu, load_wall = time.process_time() - cpu, time.perf_counter() - wall
            result = model_metrics.run(scorers, references, predictions)[name]
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            full_cpu, full_wall = (cpu - load_cpu) * scale + load_cpu, (wall - load_wall) * scale + load_wall
            key = model_metrics.KEYS[name][0]
            print(f"{name:10s} CPU {cpu:8.1f} s  wall {wall:8.1f} s  (load {load_cpu:.1f} s CPU); per pair "
                  f"{1000 * (cpu - load_cpu) / len(records):.0f} ms CPU, {1000 * (wall - load_wall) / len(records):.0f} ms wall; "
                  f"at {FULL} pairs ~{full_cpu:.0f} s CPU, ~{full_wall:.0f} s wall  mean {key} {result.scores()[key]:.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
