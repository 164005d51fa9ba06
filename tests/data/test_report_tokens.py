"""Report token counts are taken once per run folder and remembered by text and tokenizer."""

import json

import pytest

from s2d_align.data.report_tokens import count_tokens, report_token_counts, tokenizer_fingerprint


@pytest.fixture(scope="module")
def tokenizers(tiny_world):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_world.models["llm"]), AutoTokenizer.from_pretrained(tiny_world.models["text"])


TEXTS = ["The lungs are clear.", "Mild cardiomegaly. No effusion.", "The lungs are clear."]


def test_counts_match_the_tokenizer_and_are_remembered(tokenizers, tmp_path):
    llm, _ = tokenizers
    expected = [len(llm(t, add_special_tokens=False).input_ids) for t in TEXTS]
    cache = tmp_path / "report_tokens.json"
    assert report_token_counts(llm, TEXTS) == (expected, 2)  # the repeated text is counted once
    assert not cache.exists()
    assert report_token_counts(llm, TEXTS, cache) == (expected, 2)
    stored = json.loads(cache.read_text())
    assert stored["tokenizer"] == tokenizer_fingerprint(llm) and len(stored["counts"]) == 2
    assert report_token_counts(llm, TEXTS, cache) == (expected, 0)
    changed = TEXTS[:2] + ["Small left pleural effusion."]
    counts, counted = report_token_counts(llm, changed, cache)
    assert counted == 1 and counts == count_tokens(llm, changed)


def test_another_tokenizer_a_corrupt_file_or_a_reader_rank_counts_again(tokenizers, tmp_path):
    llm, text = tokenizers
    cache = tmp_path / "report_tokens.json"
    report_token_counts(llm, TEXTS, cache)
    assert tokenizer_fingerprint(text) != tokenizer_fingerprint(llm)
    assert report_token_counts(text, TEXTS, cache) == (count_tokens(text, TEXTS), 2)
    assert json.loads(cache.read_text())["tokenizer"] == tokenizer_fingerprint(text)
    cache.write_text("{not json")
    assert report_token_counts(llm, TEXTS, cache)[1] == 2
    other = tmp_path / "rank1.json"
    assert report_token_counts(llm, TEXTS, other, write=False)[1] == 2 and not other.exists()
