"""Tiny random stand-ins of the models RadEval's metrics load, written where and how those loaders read them.

Nothing is downloaded. Each builder writes the files the real model ships (config, tokenizer, weights, or
RadGraph's archive layout) with the real architecture at a tiny size, and the tests load them through
RadEval's own loading code -- from a local folder, or from the cache layouts RadEval reads offline.
"""

import json
import tarfile
from pathlib import Path

import pytest
import torch

REFS = ["No pleural effusion or pneumothorax.", "Mild cardiomegaly. The lungs are clear.",
        "There is a small left pleural effusion.", "Heart size is normal."]
HYPS = ["No effusion or pneumothorax.", "The heart is mildly enlarged, lungs clear.",
        "No pleural effusion.", "Heart size is normal."]
WORDS = sorted({w.strip(".,").lower() for t in REFS + HYPS for w in t.split()} | {".", ","})

RADGRAPH_ENTITIES = ("ANAT-DP", "OBS-DP", "OBS-U", "OBS-DA")
RADGRAPH_RELATIONS = ("modify", "located_at", "suggestive_of")
RATE_TYPES = ("ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY")


def write_bert(folder: Path, seed: int | None = None, layers: int = 1) -> Path:
    """A bert-base-uncased-shaped tokenizer and config (and, with ``seed``, random weights) over :data:`WORDS`."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(folder / "vocab.txt"), model_max_length=512).save_pretrained(folder)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    config.save_pretrained(folder)
    if seed is not None:
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(folder)
    return folder


def write_roberta(folder: Path) -> Path:
    """A random 6-layer RoBERTa (distilroberta-base's architecture) with a byte-level BPE trained on the texts."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    folder.mkdir(parents=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(REFS + HYPS, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    merges = [tuple(line.split()) for line in (folder / "merges.txt").read_text().splitlines()[1:] if line]
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=128)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2)
    RobertaModel(config).save_pretrained(folder)
    return folder


def write_chexbert(folder: Path) -> Path:
    """CheXbert's checkpoint (``chexbert.pth``, DataParallel keys) beside its bert-base-uncased config and tokenizer."""
    from transformers import BertConfig

    from s2d_align.evaluation.labelers.chexbert import CheXbert

    write_bert(folder, layers=2)
    torch.manual_seed(1)
    model = CheXbert(BertConfig.from_pretrained(folder))
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model_state_dict": state}, folder / "chexbert.pth")
    return folder


def write_radgraph(folder: Path, bert: Path, seed: int = 0, feature_size: int = 8, max_span_width: int = 4,
                   hidden_dims: int = 16) -> Path:
    """An extracted RadGraph archive (``config.json``, ``vocabulary/``, ``weights.th``) of a DyGIE model, tiny
    by default (``benchmarks/bench_model_metrics.py`` builds it at DyGIE++'s sizes: 20, 8, 150).

    The folder's name is the model type (``radgraph``, ``radgraph-xl``), which is also the dataset name of the
    label namespaces, as RadGraph's preprocessing tags every report with it. The config has the real archive's
    shape (DyGIE with a mismatched-transformer embedder, coref / ner / relation / events modules); its BERT is a
    local folder, whose weights RadGraph takes from ``weights.th`` as it does from the real archive.
    """
    from s2d_align.evaluation import radeval_models

    with radeval_models.quiet_import():
        from radeval.metrics.radgraph._vendor.allennlp.data import Vocabulary
        from radeval.metrics.radgraph._vendor.allennlp.modules import text_field_embedders, token_embedders
        from radeval.metrics.radgraph._vendor.dygie.models import dygie

    folder.mkdir(parents=True)
    transformer = {"type": "pretrained_transformer_mismatched", "model_name": str(bert), "max_length": 512}
    model = {
        "feature_size": feature_size, "max_span_width": max_span_width, "target_task": "relation",
        "feedforward_params": {"num_layers": 2, "hidden_dims": hidden_dims, "dropout": 0.4},
        "loss_weights": {"ner": 0.2, "relation": 1.0, "coref": 0.0, "events": 0.0},
        "modules": {"coref": {"spans_per_word": 0.3, "max_antecedents": 100, "coref_prop": 0}, "ner": {},
                    "relation": {"spans_per_word": 0.5},
                    "events": {"trigger_spans_per_word": 0.3, "argument_spans_per_word": 0.8,
                               "loss_weights": {"trigger": 1.0, "arguments": 1.0}}},
    }
    config = {"dataset_reader": {"type": "dygie", "max_span_width": max_span_width,
                                 "token_indexers": {"bert": transformer}},
              "model": {"type": "dygie", "embedder": {"token_embedders": {"bert": transformer}},
                        "initializer": {}, "module_initializer": {}, **model}}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    vocab = Vocabulary()
    for namespace, labels in (("ner_labels", RADGRAPH_ENTITIES), ("relation_labels", RADGRAPH_RELATIONS)):
        for label in ("", *labels):  # index 0 is DyGIE's null label
            vocab.add_token_to_namespace(label, f"{folder.name}__{namespace}")
    vocab.save_to_files(str(folder / "vocabulary"))
    torch.manual_seed(seed)
    embedder = text_field_embedders.BasicTextFieldEmbedder(
        {"bert": token_embedders.PretrainedTransformerMismatchedEmbedder(model_name=str(bert), max_length=512)})
    network = dygie.DyGIE(vocab=Vocabulary.from_files(str(folder / "vocabulary")), embedder=embedder, **model)
    torch.save(network.state_dict(), folder / "weights.th")
    return folder


def write_rate_ner(folder: Path) -> Path:
    """RaTE-NER-Deberta's shape: DeBERTa-v2 token classification with B-/I- tags of RaTEScore's five entity types,
    and a DeBERTa-v2 (unigram) tokenizer whose pieces are the test words."""
    from transformers import DebertaV2Config, DebertaV2ForTokenClassification, DebertaV2Tokenizer

    folder.mkdir(parents=True)
    pieces = [("[PAD]", 0.0), ("[UNK]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[MASK]", 0.0), ("\u2581", -2.0),
              *((w, -2.0) for w in ".,"), *((f"\u2581{w}", -1.0) for w in WORDS if w not in ".,"),
              *((c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz")]
    tokenizer = DebertaV2Tokenizer(vocab=pieces, do_lower_case=True, unk_id=1)
    tokenizer.save_pretrained(folder)
    labels = ["O", *(f"{p}-{t}" for t in RATE_TYPES for p in ("B", "I"))]
    config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                             id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    torch.manual_seed(2)
    model = DebertaV2ForTokenClassification(config)
    with torch.no_grad():
        model.classifier.bias[0] = -3.0  # fewer "O" tags, so that random weights still tag entities
        model.classifier.weight.mul_(20.0)
    model.save_pretrained(folder)
    return folder


def write_biolord(folder: Path) -> Path:
    """BioLORD-2023-C's shape: an MPNet encoder with a WordPiece tokenizer over the test words."""
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(["<s>", "<pad>", "</s>", "[UNK]", "<mask>", *WORDS]) + "\n")
    tokenizer = MPNetTokenizer(str(folder / "vocab.txt"), model_max_length=512)
    tokenizer.save_pretrained(folder)
    config = MPNetConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=514, pad_token_id=1,
                         initializer_range=1.0)  # embeddings far apart, so that entity similarities differ
    torch.manual_seed(3)
    MPNetModel(config).save_pretrained(folder)
    return folder


def hub_cache(root: Path, repo: str, files: dict[str, Path]) -> None:
    """``files`` placed as huggingface_hub caches a download of ``repo`` (a snapshot plus refs/main)."""
    revision = "0" * 40
    base = root / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(revision)
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())


def archive(folder: Path, path: Path) -> Path:
    """``folder``'s files as the top level of a ``.tar.gz``, as RadGraph's hub archives are extracted."""
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=item.name)
    return path


@pytest.fixture(scope="session")
def metric_models(tmp_path_factory):
    """Every stand-in, built once: ``{"bertscore": folder, "semb": folder, "radgraph": ..., ...}``."""
    root = tmp_path_factory.mktemp("metric-models")
    bert = write_bert(root / "bert")
    radcliq = root / "radcliq"
    write_roberta(radcliq / "distilroberta-base")
    write_chexbert(radcliq / "chexbert")
    write_radgraph(radcliq / "radgraph", bert, seed=0)
    rate = root / "ratescore"
    write_rate_ner(rate / "RaTE-NER-Deberta")
    write_biolord(rate / "BioLORD-2023-C")
    return {"bert": bert, "bertscore": radcliq / "distilroberta-base", "semb": radcliq / "chexbert",
            "radgraph": write_radgraph(root / "xl" / "radgraph-xl", bert, seed=4), "radgraph_v1": radcliq / "radgraph",
            "radcliq": radcliq, "ratescore": rate}
