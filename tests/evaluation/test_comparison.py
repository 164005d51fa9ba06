"""``s2d-align compare``: a paired test between two systems on the same ids."""

import json

import pytest

from s2d_align.cli import main
from s2d_align.evaluation.comparison import align, compare_records

REFERENCES = ["No pleural effusion.", "Mild cardiomegaly.", "The lungs are clear.", "Small left effusion."] * 4


def records(predictions, ids=None):
    ids = ids or [f"s{i}" for i in range(len(predictions))]
    return [{"id": i, "reference": r, "prediction": p} for i, r, p in zip(ids, REFERENCES, predictions)]


A = records(["The heart is enlarged."] * 16)
B = records(list(REFERENCES))


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_b_beats_a():
    result = compare_records(A, B, metrics="bleu,ce", resamples=300, seed=0)
    assert list(result["metrics"]) == ["bleu1", "bleu2", "bleu3", "bleu4", "ce_precision", "ce_recall", "ce_f1"]
    bleu = result["metrics"]["bleu4"]
    assert bleu["b"] == pytest.approx(1.0, abs=1e-6) and bleu["delta"] > 0.9 and bleu["p_value"] == 1 / 301
    assert result["metrics"]["ce_f1"]["b"] == 1.0
    assert result["test"] == "paired bootstrap" and result["n"] == 16


def test_order_of_ids_does_not_matter():
    shuffled = list(reversed(B))
    assert align(A, shuffled) == B
    one = compare_records(A, B, metrics="bleu", resamples=50, test="permutation")
    two = compare_records(A, shuffled, metrics="bleu", resamples=50, test="permutation")
    assert one["metrics"] == two["metrics"]


def test_mismatched_ids_are_listed():
    other = records(list(REFERENCES), ids=[f"s{i}" for i in range(15)] + ["extra"])
    with pytest.raises(ValueError, match=r"1 id\(s\) only in A: \['s15'\]; 1 id\(s\) only in B: \['extra'\]"):
        compare_records(A, other)


def test_different_references_are_listed():
    changed = [dict(r) for r in B]
    changed[3]["reference"] = "Something else."
    with pytest.raises(ValueError, match=r"different references for 1 id\(s\): \['s3'\]"):
        compare_records(A, changed)


def test_cli_compare(tmp_path, capsys):
    a, b = write(tmp_path / "a.jsonl", A), write(tmp_path / "b.jsonl", B)
    code = main(["compare", str(a), str(b), "--metrics", "bleu,rouge_l", "--resamples", "100",
                 "--output", str(tmp_path / "cmp.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| metric " in out and "| bleu4 " in out and "rouge_l" in out
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert saved["resamples"] == 100 and saved["metrics"]["rouge_l"]["delta"] > 0


def test_cli_compare_mismatch_is_an_error(tmp_path, capsys):
    a = write(tmp_path / "a.jsonl", A)
    b = write(tmp_path / "b.jsonl", B[:10])
    assert main(["compare", str(a), str(b), "--metrics", "bleu"]) == 2
    assert "6 id(s) only in" in capsys.readouterr().err


def test_duplicate_ids_and_untestable_metrics_are_errors():
    records = [{"id": "s0", "reference": "No effusion.", "prediction": "No effusion."},
               {"id": "s1", "reference": "Small effusion.", "prediction": "Clear lungs."}]
    with pytest.raises(ValueError, match="duplicate id 's0'"):
        align(records, records + [{"id": "s0", "reference": "No effusion.", "prediction": "garbage"}])
    with pytest.raises(ValueError, match="no metric with per-report statistics"):
        compare_records(records, records, metrics="meteor")
