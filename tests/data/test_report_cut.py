"""Over-long reports are cut at a sentence boundary, measured with the LLM tokenizer."""

from transformers import AutoTokenizer

from s2d_align.data.report_cut import count_cut_reports, fit_report


def test_cut_keeps_whole_sentences(tiny_world):
    tokenizer = AutoTokenizer.from_pretrained(tiny_world.models["llm"])
    first, second, third = "The lungs are clear.", "Heart size is normal.", "No pneumothorax is seen."
    text = f"{first} {second} {third}"
    n = lambda t: len(tokenizer(t, add_special_tokens=False).input_ids)  # noqa: E731
    full, two, one = n(text), n(f"{first} {second}"), n(first)
    assert fit_report(text, tokenizer, full + 1) == (tokenizer(text, add_special_tokens=False).input_ids, False)
    ids, cut = fit_report(text, tokenizer, full)  # one token short: the last sentence goes whole
    assert cut and tokenizer.decode(ids) == f"{first} {second}" and len(ids) == two
    ids, cut = fit_report(text, tokenizer, two)
    assert cut and tokenizer.decode(ids) == first
    ids, cut = fit_report(text, tokenizer, one)  # no boundary fits: the first sentence itself is cut
    assert cut and len(ids) == one - 1
    assert count_cut_reports([text, first, second], tokenizer, one + 1) == 1
