"""The CheXbert labeler on a checkpoint of random weights written in the published format.

The published ``chexbert.pth`` is ``{"epoch", "model_state_dict", "optimizer_state_dict"}`` saved from
``nn.DataParallel`` (keys start with ``module.``); the tokenizer and config come from a local BERT folder.
Here both are tiny and random, built in the test; nothing is downloaded.
"""

import json

import pytest
import torch

from s2d_align.chexpert import OBSERVATIONS
from s2d_align.evaluation.labelers import build_labeler
from s2d_align.evaluation.labelers.chexbert import CheXbert, CheXbertLabeler, load_checkpoint

WORDS = ("no pleural effusion pneumothorax mild cardiomegaly heart size is normal the lungs are clear "
         "small left right opacity atelectasis . ,").split()
REPORTS = [
    "No pleural effusion.",
    "Mild cardiomegaly.\n\nThe lungs are clear.",
    "",
    "small left pleural effusion . right opacity , atelectasis . " * 30,  # longer than max_position_embeddings
]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertTokenizerFast

    folder = tmp_path_factory.mktemp("bert")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    BertConfig(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=64).save_pretrained(folder)
    return folder


class Payload:
    """An arbitrary pickled object: weights-only loading must refuse it."""


def published_format(model: CheXbert) -> dict:
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters())
    return {"epoch": 7, "model_state_dict": state, "optimizer_state_dict": optimizer.state_dict()}


@pytest.fixture(scope="module")
def checkpoint(bert_dir, tmp_path_factory):
    from transformers import BertConfig

    torch.manual_seed(0)
    model = CheXbert(BertConfig.from_pretrained(bert_dir))
    path = tmp_path_factory.mktemp("ckpt") / "chexbert.pth"
    torch.save(published_format(model), path)
    return path


def test_labels_every_observation_with_valid_values(bert_dir, checkpoint):
    labeler = CheXbertLabeler(checkpoint, bert_dir, batch_size=2)
    results = labeler.label(REPORTS)
    assert len(results) == 4
    for labels in results:
        assert list(labels) == list(OBSERVATIONS)
        assert all(v in (1, 0, -1, None) for v in list(labels.values())[:-1])
        assert labels["No Finding"] in (1, None)
    assert labeler.version.startswith("chexbert.pth sha256:")


def test_batching_and_padding_do_not_change_labels(bert_dir, checkpoint):
    one = CheXbertLabeler(checkpoint, bert_dir, batch_size=1).predict_classes(REPORTS)
    many = CheXbertLabeler(checkpoint, bert_dir, batch_size=4).predict_classes(REPORTS)
    assert one == many


def test_padding_is_masked_so_every_logit_equals_the_unpadded_ones(bert_dir, checkpoint):
    labeler = CheXbertLabeler(checkpoint, bert_dir, batch_size=4)
    real, batches = labeler.model.forward, []

    def recording(input_ids, attention_mask):
        logits = real(input_ids, attention_mask)
        batches.append((input_ids, attention_mask, logits))
        return logits

    labeler.model.forward = recording
    labeler.predict_classes(REPORTS)
    (input_ids, attention_mask, logits), = batches
    assert not attention_mask.all()  # the batch holds padding
    for row in range(len(input_ids)):
        length = int(attention_mask[row].sum())
        with torch.inference_mode():
            alone = real(input_ids[row : row + 1, :length], torch.ones(1, length, dtype=torch.long))
        for head, head_alone in zip(logits, alone):
            torch.testing.assert_close(head[row : row + 1], head_alone, rtol=1e-4, atol=1e-5)


def test_chexbert_text_preparation_and_truncation(bert_dir, checkpoint):
    labeler = CheXbertLabeler(checkpoint, bert_dir)
    ids = labeler.encode(REPORTS)
    cls, sep = labeler.tokenizer.cls_token_id, labeler.tokenizer.sep_token_id
    assert ids[2] == [cls, sep]  # an empty report
    assert ids[1] == labeler.encode(["Mild cardiomegaly. The lungs are clear."])[0]  # line breaks are spaces
    assert len(ids[3]) == 64 and ids[3][0] == cls and ids[3][-1] == sep  # cut to the position limit


def test_head_classes_map_to_chexpert_labels(bert_dir, tmp_path):
    """Zero weights and one-hot biases force each head's class: 0 blank, 1 positive, 2 negative, 3 uncertain."""
    from transformers import BertConfig

    model = CheXbert(BertConfig.from_pretrained(bert_dir))
    forced = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 1, 1]  # the last is the two-way No Finding head
    with torch.no_grad():
        for head, cls in zip(model.linear_heads, forced):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[cls] = 5.0
    path = tmp_path / "forced.pth"
    torch.save(published_format(model), path)
    (labels,) = CheXbertLabeler(path, bert_dir).label(["no pleural effusion"])
    expected = [None, 1, 0, -1, None, 1, 0, -1, None, 1, 0, -1, 1, 1]
    assert labels == dict(zip(OBSERVATIONS, expected))


def test_old_layer_norm_names_and_saved_position_ids_load(bert_dir, checkpoint, tmp_path):
    from transformers import BertConfig

    data = torch.load(checkpoint, weights_only=True)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in data["model_state_dict"].items()}
    state["module.bert.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    torch.save({"model_state_dict": state}, tmp_path / "old.pth")
    model = CheXbert(BertConfig.from_pretrained(bert_dir))
    load_checkpoint(model, tmp_path / "old.pth")
    reference = CheXbert(BertConfig.from_pretrained(bert_dir))
    load_checkpoint(reference, checkpoint)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_bad_checkpoints_are_refused_with_a_reason(bert_dir, checkpoint, tmp_path):
    data = torch.load(checkpoint, weights_only=True)
    truncated = dict(data["model_state_dict"])
    truncated.pop("module.linear_heads.13.bias")
    torch.save({"model_state_dict": truncated}, tmp_path / "truncated.pth")
    with pytest.raises(ValueError, match=r"not a CheXbert checkpoint: missing \['linear_heads.13.bias'\]"):
        CheXbertLabeler(tmp_path / "truncated.pth", bert_dir)

    torch.save({"model_state_dict": data["model_state_dict"], "extra": Payload()}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="cannot be read as a weights-only torch checkpoint"):
        CheXbertLabeler(tmp_path / "pickled.pth", bert_dir)

    wide = json.loads((bert_dir / "config.json").read_text())
    wide["hidden_size"] = 32
    other = tmp_path / "wide"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(wide))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (bert_dir / name).exists():
            (other / name).write_bytes((bert_dir / name).read_bytes())
    with pytest.raises(ValueError, match="tensor shapes do not match the BERT config"):
        CheXbertLabeler(checkpoint, other)


def test_missing_files_and_options(bert_dir, checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such CheXbert checkpoint"):
        CheXbertLabeler(tmp_path / "absent.pth", bert_dir)
    with pytest.raises(FileNotFoundError, match="needs a local bert-base-uncased folder"):
        CheXbertLabeler(checkpoint, tmp_path)
    with pytest.raises(ValueError, match="needs --chexbert-checkpoint"):
        build_labeler("chexbert", checkpoint=checkpoint)


def test_cli_label_with_chexbert(bert_dir, checkpoint, tmp_path):
    from s2d_align.cli import main

    source = tmp_path / "reports.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(REPORTS)))
    out = tmp_path / "labels.jsonl"
    assert main(["label", "--input", str(source), "--output", str(out), "--labeler", "chexbert",
                 "--chexbert-checkpoint", str(checkpoint), "--bert-dir", str(bert_dir), "--batch-size", "3"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    expected = CheXbertLabeler(checkpoint, bert_dir).label(REPORTS)
    assert lines == [{"id": f"r{i}", "labels": labels} for i, labels in enumerate(expected)]
