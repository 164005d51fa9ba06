"""evaluate_records / evaluate_file / format_table and the ``evaluate`` command."""

import csv
import json

import pytest

from s2d_align.cli import main
from s2d_align.evaluation.report import evaluate_file, evaluate_records, format_table, parse_metrics

RECORDS = [
    {"id": "a", "reference": "Mild cardiomegaly. No pleural effusion.", "prediction": "Mild cardiomegaly. No effusion."},
    {"id": "b", "reference": "No acute cardiopulmonary process.", "prediction": "No acute cardiopulmonary process."},
    {"id": "c", "reference": "Small left pleural effusion.", "prediction": "The lungs are clear."},
]
FAST = "bleu,rouge_l,cider,ce"


def test_headline_keys_and_detail():
    metrics = evaluate_records(RECORDS, metrics=FAST, resamples=200)
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "ce_precision", "ce_recall", "ce_f1"):
        assert isinstance(metrics[key], float)
    # CE by hand (uncertain positive): reference positives Cardiomegaly(a), No Finding(b), Pleural Effusion(c);
    # prediction positives Cardiomegaly(a), No Finding(b), No Finding(c) -> TP 2, FP 1, FN 1
    assert (metrics["ce_precision"], metrics["ce_recall"]) == (2 / 3, 2 / 3)
    assert metrics["n"] == 3
    assert metrics["cleaning"]["scheme"] == "none"
    assert metrics["ce"]["labeler"] == "rules 2"
    assert set(metrics["confidence_intervals"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider",
                                                    "ce_precision", "ce_recall", "ce_f1"}
    low, high = metrics["confidence_intervals"]["bleu4"]
    assert low <= metrics["bleu4"] <= high
    assert metrics["bootstrap"] == {"resamples": 200, "seed": 0, "level": 0.95, "method": "percentile"}
    assert metrics["not_run"] == {}
    assert metrics["versions"]["pycocoevalcap"] == "1.2"


def test_nlg_scores_the_cleaned_text():
    import math

    from s2d_align.evaluation.cleaning import cleaner

    records = [{"id": "x", "reference": "1. Heart size is NORMAL.  2. No effusion.", "prediction": "Heart size normal; no effusion."},
               *RECORDS]
    clean = cleaner("mimic_cxr")
    assert clean(records[0]["reference"]) == "heart size is normal . no effusion ."
    assert clean(records[0]["prediction"]) == "heart size normal no effusion ."
    metrics = evaluate_records(records, clean="mimic_cxr", metrics="bleu,rouge_l,cider", resamples=0)
    # By hand on the cleaned tokens: 6 + 6 + 5 + 1 of 22 predicted unigrams match; references hold 25 tokens.
    assert metrics["bleu1"] == pytest.approx(18 / 22 * math.exp(1 - 25 / 22), rel=1e-6)
    assert {k: round(metrics[k], 6) for k in ("bleu2", "bleu3", "bleu4", "rouge_l", "cider")} == {
        "bleu2": 0.616969, "bleu3": 0.522127, "bleu4": 0.439346, "rouge_l": 0.736516, "cider": 4.868778}
    raw = evaluate_records(records, clean="none", metrics="bleu", resamples=0)
    assert round(raw["bleu4"], 6) != 0.439346  # the cleaning matters on these records


def test_bad_resamples_and_output_name(tmp_path):
    with pytest.raises(ValueError, match="resamples must be 0"):
        evaluate_records(RECORDS, metrics="bleu", resamples=-5)
    with pytest.raises(ValueError, match="the metrics file is JSON"):
        evaluate_file(tmp_path / "never-read.jsonl", tmp_path / "m.md")


def test_radgraph_without_annotations_is_reported_not_run():
    # named in --metrics, radgraph runs the RadGraph model (test_model_metrics_radeval.py); here it may not
    metrics = evaluate_records(RECORDS, metrics="bleu,radgraph", resamples=0, radgraph_model=False)
    assert "rg_e" not in metrics
    assert "no RadGraph annotations" in metrics["not_run"]["radgraph"]
    assert "confidence_intervals" not in metrics


def test_cleaning_changes_the_scored_text_and_is_recorded():
    raw = evaluate_records(RECORDS, metrics="bleu", resamples=0)
    cleaned = evaluate_records(RECORDS, clean="mimic_cxr", metrics="bleu", resamples=0)
    assert cleaned["cleaning"]["scheme"] == "mimic_cxr"
    assert cleaned["bleu1"] != raw["bleu1"]


def test_intervals_are_seeded():
    one = evaluate_records(RECORDS, metrics="bleu,ce", resamples=100, seed=3)["confidence_intervals"]
    two = evaluate_records(RECORDS, metrics="bleu,ce", resamples=100, seed=3)["confidence_intervals"]
    assert one == two


def test_bad_records():
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        evaluate_records(RECORDS + RECORDS[:1])
    with pytest.raises(ValueError, match="empty reference, e.g. \\['z'\\]"):
        evaluate_records([{"id": "z", "reference": " ", "prediction": "x"}])
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metrics("bleu,spice")


def test_format_table_rows_and_optional_columns():
    table = format_table({
        "after S1": {"bleu1": 0.4, "bleu2": 0.3, "bleu3": 0.2, "bleu4": 0.1, "rouge_l": 0.3, "cider": 0.25,
                     "ce_precision": 0.5, "ce_recall": 0.4, "ce_f1": 0.44444},
        "after S3": {"bleu1": 0.42, "bleu2": 0.263, "bleu3": 0.183, "bleu4": 0.149, "rouge_l": 0.332, "cider": 0.3,
                     "ce_precision": 0.613, "ce_recall": 0.606, "ce_f1": 0.608, "meteor": 0.18},
    })
    lines = table.splitlines()
    assert lines[0].split("|")[1:-1] == ["          ", "   B@1 ", "   B@2 ", "   B@3 ", "   B@4 ", "   MTR ",
                                         "   R-L ", " CIDEr ", "  CE-P ", "  CE-R ", " CE-F1 "]
    assert lines[2] == ("| after S1 | 0.400 | 0.300 | 0.200 | 0.100 |     - | 0.300 | 0.250 | 0.500 | 0.400 "
                        "| 0.444 |")
    assert "RG_E" not in table


def test_evaluate_file_writes_json_markdown_and_csv(tmp_path):
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    metrics = evaluate_file(predictions, tmp_path / "out" / "metrics.json", clean="iu_xray", metrics=FAST,
                            resamples=50)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["source"] == str(predictions)
    markdown = (tmp_path / "out" / "metrics.md").read_text()
    assert "| model |" in markdown and "iu_xray" in markdown and "micro_14" in markdown
    rows = list(csv.DictReader((tmp_path / "out" / "metrics.samples.csv").open()))
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["ref_cardiomegaly"] == "1" and rows[0]["pred_pleural_effusion"] == "0"
    assert rows[2]["ref_pleural_effusion"] == "1" and rows[2]["pred_pleural_effusion"] == ""
    assert float(rows[1]["bleu4"]) == pytest.approx(1.0, abs=1e-6)
    assert {"bleu4", "rouge_l", "cider"} <= set(rows[0])


def test_cli_evaluate(tmp_path, capsys):
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    code = main(["evaluate", "--predictions", str(predictions), "--output", str(tmp_path / "m.json"),
                 "--metrics", FAST, "--bootstrap", "20"])
    assert code == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0].startswith("|      |   B@1 |")
    assert "| test |" in out.out
    assert out.out.splitlines()[3] == ("3 reports; cleaning none; pycocoevalcap 1.2; CE: rules 2, micro over 14, "
                                       "uncertain positive; 95% intervals from 20 bootstrap resamples (seed 0)")
    assert json.loads((tmp_path / "m.json").read_text())["bootstrap"]["resamples"] == 20


def test_cli_reports_bad_input_with_the_line(tmp_path, capsys):
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text(json.dumps(RECORDS[0]) + "\n{oops\n", encoding="utf-8")
    assert main(["evaluate", "--predictions", str(predictions), "--output", str(tmp_path / "m.json")]) == 2
    assert "pred.jsonl:2: not valid JSON" in capsys.readouterr().err
