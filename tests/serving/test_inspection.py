"""The inspection page: scores and labels as ``evaluate`` computes them, disagreements marked, self-contained."""

import json

from s2d_align.data.manifest import read_manifest
from s2d_align.evaluation.report import score_records
from s2d_align.inspection import study_rows, write_inspection


def _predictions(tiny_world, path):
    studies = [s for s in read_manifest(tiny_world.manifest) if s.split == "test"]
    guesses = ["There is a small left pleural effusion.", "Heart size is normal. The lungs are clear.",
               "Mild cardiomegaly is present.", "No pneumothorax is seen."]
    records = [{"id": s.id, "reference": s.findings, "prediction": guesses[i % 4]} for i, s in enumerate(studies)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_rows_carry_evaluates_scores_and_mark_label_disagreements(tiny_world, tmp_path):
    records = _predictions(tiny_world, tmp_path / "p.jsonl")
    rows = study_rows(tmp_path / "p.jsonl", tiny_world.manifest)
    samples = score_records(records, metrics="bleu,rouge_l,cider,ce", resamples=0).samples
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    for row, sample in zip(rows, samples):
        assert row["scores"] == {k: float(sample[k]) for k in ("bleu4", "rouge_l", "cider")}
    effusion = rows[0]  # predicts only a left pleural effusion
    assert effusion["labels"]["Pleural Effusion"]["pred"] == 1
    truth_has_effusion = effusion["labels"]["Pleural Effusion"]["ref"] in (1, -1)
    assert ("Pleural Effusion" in effusion["disagree"]) == (not truth_has_effusion)
    assert all(r["images"][0].is_file() for r in rows)


def test_the_page_is_self_contained_with_one_row_per_study(tiny_world, tmp_path):
    records = _predictions(tiny_world, tmp_path / "p.jsonl")
    out = tmp_path / "report.html"
    assert write_inspection(tmp_path / "p.jsonl", tiny_world.manifest, out) == len(records)
    page = out.read_text()
    assert page.count('<tr class="study"') == len(records)
    assert page.count("data:image/jpeg;base64,") == len(records)
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert "Research use only, not for clinical use" in page


def test_ids_missing_from_the_manifest_are_refused(tiny_world, tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "nope", "reference": "a", "prediction": "b"}) + "\n")
    import pytest

    with pytest.raises(ValueError, match="not in"):
        study_rows(tmp_path / "p.jsonl", tiny_world.manifest)
