import json
import re
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pytest
from PIL import Image

from s2d_align.chexpert import OBSERVATIONS
from s2d_align.cli import main as cli_main
from s2d_align.data.key_phrases import NoRefiner, compose_phrases
from s2d_align.data.manifest import read_manifest
from s2d_align.data.phantom import prepare_phantom
from s2d_align.data.phantom.anatomy import Chest, sample_anatomy
from s2d_align.data.phantom.markup import MarkupError, parse, sentences, tokenize
from s2d_align.data.phantom.patients import OBSERVATION_OF, Finding, StudyPlan, simulate_patients
from s2d_align.data.phantom.radiograph import geometry_for, render
from s2d_align.data.phantom.reports import (
    MENTION_WORDS,
    NEGATION_CUES,
    PHRASES,
    PNEUMONIA_PHRASES,
    STATEMENT_LABELS,
    UNCERTAINTY_CUES,
    template_slots,
    write_report,
)
from s2d_align.data.radgraph import RELATIONS, V1_LABELS, parse_annotation


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """300 studies at 64 px: enough for every observation to occur, small enough to stay fast."""
    out = tmp_path_factory.mktemp("phantom")
    manifest = prepare_phantom(out, studies=300, seed=11, image_size=64)
    return out, manifest, [json.loads(line) for line in manifest.read_text().splitlines()]


# --------------------------------------------------------------------------- a strict rule labeler


def _has(phrases, sentence):
    return any(re.search(r"\b" + re.escape(p) + r"\b", sentence) for p in phrases)


def _rule_labels(text: str) -> dict:
    """A minimal CheXpert-style labeler: one polarity per sentence, decided by the cues alone."""
    labels = {}
    rank = {1: 2, -1: 1, 0: 0}
    for sentence in re.split(r"(?<=\.)\s+", text.lower()):
        polarity = 0 if _has(NEGATION_CUES, sentence) else -1 if _has(UNCERTAINTY_CUES, sentence) else 1
        for observation, words in MENTION_WORDS.items():
            if _has(words, sentence):
                old = labels.get(observation)
                labels[observation] = polarity if old is None or rank[polarity] > rank[old] else old
    return labels


# --------------------------------------------------------------------------- arguments and files


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"studies": 9}, "studies must be an integer >= 10"),
        ({"studies": True}, "studies must be an integer"),
        ({"image_size": 63}, "image_size must be an integer >= 64"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_arguments_are_validated(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        prepare_phantom(tmp_path, **kwargs)
    assert not (tmp_path / "manifest.jsonl").exists()


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    first, second, other = (prepare_phantom(tmp_path / name, studies=24, seed=seed, image_size=64).parent
                            for name, seed in (("a", 5), ("b", 5), ("c", 6)))
    for name in ("manifest.jsonl", "prepare_report.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    images = sorted(p.name for p in (first / "images").iterdir())
    assert len(images) == 24 and images == sorted(p.name for p in (second / "images").iterdir())
    assert all((first / "images" / n).read_bytes() == (second / "images" / n).read_bytes() for n in images)
    assert (first / "manifest.jsonl").read_bytes() != (other / "manifest.jsonl").read_bytes()
    assert (first / "images" / images[0]).read_bytes() != (other / "images" / images[0]).read_bytes()


def test_manifest_round_trips_and_images_are_grayscale(dataset):
    out, manifest, raw = dataset
    studies = read_manifest(manifest)
    assert len(studies) == 300 and len({s.id for s in studies}) == 300
    assert [s.to_json() for s in studies] == raw
    for study in studies[:40]:
        assert re.fullmatch(r"p\d{4}_s\d{2}", study.id) and study.images == (f"images/{study.id}.png",)
        assert study.subject_id == study.id.split("_")[0] and re.fullmatch(r"s\d{8}", study.study_id)
        with Image.open(out / study.images[0]) as image:
            assert image.mode == "L" and image.size == (64, 64)
            pixels = np.asarray(image)
        assert pixels.std() > 20  # a radiograph, not a blank
    assert len({s.study_id for s in studies}) == 300


def test_stale_images_of_an_earlier_run_are_removed(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "p9999_s00.png").write_bytes(b"old")
    (tmp_path / "images" / "notes.txt").write_text("mine")
    prepare_phantom(tmp_path, studies=10, seed=0, image_size=64)
    assert not (tmp_path / "images" / "p9999_s00.png").exists()
    assert (tmp_path / "images" / "notes.txt").exists()
    assert len(list((tmp_path / "images").glob("*.png"))) == 10


def test_cli_prepares_a_phantom(tmp_path, capsys):
    assert cli_main(["prepare", "phantom", "--out", str(tmp_path), "--studies", "12", "--image-size", "64"]) == 0
    assert len(read_manifest(tmp_path / "manifest.jsonl")) == 12
    assert cli_main(["prepare", "phantom", "--out", str(tmp_path), "--studies", "3"]) == 2
    assert "studies must be an integer >= 10" in capsys.readouterr().err


# --------------------------------------------------------------------------- patients, splits, references


def test_splits_are_patient_disjoint_and_roughly_70_10_20(dataset):
    _, _, records = dataset
    splits_of = defaultdict(set)
    for record in records:
        splits_of[record["subject_id"]].add(record["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    patients = [next(iter(s)) for s in splits_of.values()]
    share = {split: patients.count(split) / len(patients) for split in ("train", "val", "test")}
    assert abs(share["train"] - 0.7) < 0.03 and abs(share["val"] - 0.1) < 0.03 and abs(share["test"] - 0.2) < 0.03


def test_reference_is_the_patients_most_recent_earlier_study(dataset):
    _, _, records = dataset
    by_id = {r["id"]: r for r in records}
    by_patient = defaultdict(list)
    for record in records:
        by_patient[record["subject_id"]].append(record)
    assert max(len(v) for v in by_patient.values()) == 4 and min(len(v) for v in by_patient.values()) == 1
    for studies in by_patient.values():
        ordered = sorted(studies, key=lambda r: datetime.fromisoformat(r["study_time"]))
        assert [r["id"] for r in ordered] == sorted(r["id"] for r in studies)
        assert ordered[0]["reference_id"] is None
        for before, after in zip(ordered, ordered[1:]):
            assert after["reference_id"] == before["id"]
            assert by_id[after["reference_id"]]["split"] == after["split"]
            assert datetime.fromisoformat(before["study_time"]) < datetime.fromisoformat(after["study_time"])


def test_patients_keep_their_anatomy_across_studies():
    """Lung fields of one patient on two days overlap more than those of two patients (pose and exposure vary)."""
    patients = simulate_patients(200, seed=3)
    assert sum(len(p.studies) for p in patients) == 200
    assert len({id(p.anatomy) for p in patients}) == len(patients)
    assert any(len(p.studies) > 1 and p.studies[0].findings != p.studies[-1].findings for p in patients)
    rng = np.random.default_rng(0)
    normal = StudyPlan(0, datetime(2020, 1, 1), "PA", ())

    def lung_field(patient):
        image = render(patient.anatomy, normal, 64, np.random.default_rng(rng.integers(1 << 30))).astype(float)
        return image < 0.5 * (np.percentile(image, 5) + np.percentile(image, 60))

    first = [lung_field(p) for p in patients[:16]]
    second = [lung_field(p) for p in patients[:16]]
    overlap = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    same = np.mean([overlap(first[i], second[i]) for i in range(16)])
    other = np.mean([overlap(first[i], second[(i + 1) % 16]) for i in range(16)])
    assert same > other + 0.03


# --------------------------------------------------------------------------- labels and text


def test_labels_cover_all_observations_and_follow_no_finding_rule(dataset):
    _, _, records = dataset
    for record in records:
        labels = record["labels"]
        assert list(labels) == list(OBSERVATIONS)
        assert all(v in (1, 0, -1, None) for v in labels.values())
        others = [v for o, v in labels.items() if o not in ("No Finding", "Support Devices")]
        assert labels["No Finding"] == (None if any(v in (1, -1) for v in others) else 1)


def test_every_drawn_observation_occurs_with_sensible_prevalence(dataset):
    out, _, records = dataset
    n = len(records)
    for observation in set(OBSERVATION_OF.values()):
        positive = sum(r["labels"][observation] == 1 for r in records)
        assert 0.04 * n <= positive <= 0.35 * n, observation
    normal = sum(r["labels"]["No Finding"] == 1 for r in records) / n
    assert 0.2 <= normal <= 0.4
    assert sum(r["labels"]["Pneumonia"] == -1 for r in records) > 0
    uncertain = sum(v == -1 for r in records for o, v in r["labels"].items() if o != "Pneumonia")
    positive = sum(v == 1 for r in records for o, v in r["labels"].items() if o not in ("No Finding",))
    assert 0 < uncertain < 0.25 * positive
    summary = json.loads((out / "prepare_report.json").read_text())
    assert summary["parameters"] == {"seed": 11, "studies": 300, "image_size": 64}
    for split, counts in summary["splits"].items():
        members = [r for r in records if r["split"] == split]
        assert counts["studies"] == len(members) and counts["patients"] == len({r["subject_id"] for r in members})
        assert counts["labels"]["Pleural Effusion"]["1"] == sum(r["labels"]["Pleural Effusion"] == 1 for r in members)
        assert all(sum(c.values()) == len(members) for c in counts["labels"].values())


def test_a_rule_labeler_reads_the_reports_as_the_labels_say(dataset):
    _, _, records = dataset
    for record in records:
        expected = {o: v for o, v in record["labels"].items() if o != "No Finding" and v is not None}
        assert _rule_labels(record["findings"]) == expected, record["findings"]


def test_reports_have_field_lengths_and_wording(dataset):
    _, _, records = dataset
    for record in records:
        words = [t for t in tokenize(record["findings"]) if t[0].isalnum()]
        assert 25 <= len(words) <= 70, record["findings"]
        assert record["impression"] and record["findings"].endswith(".")
    texts = [r["findings"] for r in records]
    assert len(set(texts)) > 0.95 * len(texts)
    joined = " ".join(texts)
    for phrase in ("The lungs are clear.", "Heart size is normal.", "No pleural effusion or pneumothorax.",
                   "Interval resolution of", "Unchanged", "New ", "cannot be excluded", "Possible"):
        assert phrase in joined, phrase
    with_prior = [r for r in records if r["reference_id"]]
    first = [r for r in records if not r["reference_id"]]
    change = re.compile(r"\b(New|new|Unchanged|unchanged|Stable|Persistent|Increased|Decreased|resolution|resolved)\b")
    assert sum(bool(change.search(r["findings"])) for r in with_prior) > 0.5 * len(with_prior)
    assert not any(re.search(r"\b(resolution|resolved|Unchanged|unchanged|Increased|Decreased)\b", r["findings"])
                   for r in first)


def test_bedside_devices_mean_an_ap_film(dataset):
    _, _, records = dataset
    bedside = re.compile(r"endotracheal|nasogastric|enteric|orogastric|catheter|PICC|chest tube")
    assert {r["views"][0] for r in records} == {"AP", "PA"}
    for record in records:
        if bedside.search(record["findings"]):
            assert record["views"] == ["AP"]


# --------------------------------------------------------------------------- RadGraph and key phrases


def test_radgraph_matches_the_text_token_by_token(dataset):
    _, _, records = dataset
    for record in records:
        graph = record["radgraph"]
        tokens = graph["text"].split(" ")
        assert tokens == tokenize(record["findings"])
        assert graph["entities"], record["id"]
        for key, entity in graph["entities"].items():
            assert entity["tokens"] == " ".join(tokens[entity["start_ix"]: entity["end_ix"] + 1])
            assert entity["label"] in V1_LABELS
            for relation, target in entity["relations"]:
                assert relation in RELATIONS and target in graph["entities"] and target != key
        parse_annotation(graph)


def test_radgraph_certainty_follows_the_labels(dataset):
    _, _, records = dataset
    for record in records:
        labels = {e["label"] for e in record["radgraph"]["entities"].values()}
        values = set(record["labels"].values())
        assert ("OBS-U" in labels) == (-1 in values)
        if 1 in values:
            assert "OBS-DP" in labels
        if 0 in values:
            text = record["findings"].lower()
            assert "OBS-DA" in labels or "normal" in text or "unremarkable" in text


def test_key_phrases_are_composed_from_the_annotation(dataset):
    _, _, records = dataset
    for record in records:
        expected = NoRefiner().refine(compose_phrases(parse_annotation(record["radgraph"])))
        assert [k["text"] for k in record["key_phrases"]] == [k.text for k in expected]
        assert all(k["source"] == "radgraph:composed" for k in record["key_phrases"])
    effusions = [k["text"] for r in records for k in r["key_phrases"] if "effusion" in k["text"]]
    assert any(re.search(r"(small|moderate|large) effusions? in (right|left|bilateral) pleural", t) for t in effusions)


# --------------------------------------------------------------------------- the phrase table itself

_SAMPLES = {
    "effusion": [Finding("effusion", 2, "right"), Finding("effusion", 1, "bilateral")],
    "pneumothorax": [Finding("pneumothorax", 2, "left")],
    "cardiomegaly": [Finding("cardiomegaly", 3)],
    "mediastinum": [Finding("mediastinum", 1)],
    "consolidation": [Finding("consolidation", 1, "left", "mid"), Finding("consolidation", 2, "right", "lower")],
    "opacity": [Finding("opacity", 1, "right", "upper"), Finding("opacity", 2, "bilateral", "lower")],
    "atelectasis_plate": [Finding("atelectasis", 1, "left", "lower", "plate"),
                          Finding("atelectasis", 1, "bilateral", "lower", "plate")],
    "atelectasis_lobar": [Finding("atelectasis", 2, "left", "lower", "lobar"),
                          Finding("atelectasis", 2, "right", "upper", "lobar")],
    "edema": [Finding("edema", 2)],
    "lesion": [Finding("lesion", 1, "left", "mid", "nodule", measure_cm=2),
               Finding("lesion", 1, "right", "upper", "mass", measure_cm=5)],
    "fracture": [Finding("fracture", 1, "right", ribs=(5,)), Finding("fracture", 2, "left", ribs=(4, 5, 6))],
    "thickening": [Finding("thickening", 1, "bilateral"), Finding("thickening", 1, "left")],
    "et_tube": [Finding("device", variant="et_tube", measure_cm=4)],
    "ng_tube": [Finding("device", variant="ng_tube")],
    "central_line": [Finding("device", variant="central_line", route=r) for r in ("jugular", "subclavian", "picc")],
    "pacemaker": [Finding("device", variant="pacemaker")],
    "chest_tube": [Finding("device", variant="chest_tube", side="right")],
}


def _renderings(key):
    subject = key.split(".")[0]
    for finding in _SAMPLES.get(subject, [None]):
        slots = template_slots(finding, np.random.default_rng(0)) if finding else {"other": "left"}
        for pneumonia in PNEUMONIA_PHRASES if subject == "consolidation" else [""]:
            for template in PHRASES[key]:
                yield template, parse(template, {**slots, "pneumonia": pneumonia})


@pytest.mark.parametrize("key", sorted(PHRASES))
def test_every_template_says_what_its_labels_say(key):
    """Each template, with every slot filling, reads (by cues alone) as its statement's labels, and its graph agrees."""
    expected = STATEMENT_LABELS[key]
    for template, parsed in _renderings(key):
        text = " ".join(parsed.tokens)
        assert _rule_labels(text) == expected, (template, text)
        labels = {m.label for m in parsed.mentions}
        assert len(sentences(parsed.tokens)) >= 1 and parsed.tokens[-1] == "."
        if 1 in expected.values():
            assert "OBS-DP" in labels, template
        if -1 in expected.values():
            assert "OBS-U" in labels, template
        if 0 in expected.values() and key.startswith(("negate", "lungs.clear_no", "effusion.", "consolidation.")):
            assert "OBS-DA" in labels, template


def test_markup_errors_name_the_template():
    assert parse("Small/DP>e effusion/DP#e .").tokens == ("Small", "effusion", ".")
    with pytest.raises(MarkupError, match="not defined"):
        parse("small/DP>e effusion/DP .")
    with pytest.raises(MarkupError, match="slot"):
        parse("{size} effusion .")
    with pytest.raises(MarkupError, match="cannot read"):
        parse("effusion/XX .")


# --------------------------------------------------------------------------- interval change


def _plan(index, *findings, view="PA"):
    return StudyPlan(index, datetime(2020, 1, 1) + timedelta(days=index), view, tuple(findings))


@pytest.mark.parametrize(
    "before, after, wording, value",
    [
        (None, Finding("effusion", 1, "right"), r"\bNew\b|\bnew\b", 1),
        (Finding("effusion", 1, "right"), Finding("effusion", 2, "right"), r"Increased|Worsening|increase", 1),
        (Finding("effusion", 2, "right"), Finding("effusion", 1, "right"), r"Decreased|Improving|decrease", 1),
        (Finding("effusion", 1, "right"), Finding("effusion", 1, "right"), r"Unchanged|Stable|Persistent|unchanged", 1),
        (Finding("effusion", 1, "right"), None, r"resolution|resolved", 0),
        (None, Finding("effusion", 1, "right", uncertain=True), r"Possible|cannot be excluded|may represent", -1),
    ],
)
def test_interval_change_is_worded_against_the_prior_study(before, after, wording, value):
    prior = _plan(0, *([before] if before else []))
    current = _plan(1, *([after] if after else []))
    for seed in range(6):
        report = write_report(current, prior, np.random.default_rng(seed))
        sentence = next(s for s in re.split(r"(?<=\.) ", report.findings) if "effusion" in s)
        assert re.search(wording, sentence), sentence
        assert report.labels["Pleural Effusion"] == value
        assert "right" in sentence


def test_a_first_study_has_no_change_wording():
    report = write_report(_plan(0, Finding("effusion", 1, "left")), None, np.random.default_rng(0))
    assert report.labels["Pleural Effusion"] == 1 and not re.search(r"[Nn]ew|[Uu]nchanged", report.findings)


# --------------------------------------------------------------------------- the drawing

_ANATOMY = sample_anatomy(np.random.default_rng(42))


def _difference(*findings, view="PA", size=128):
    """Image with the findings minus the same image (same pose, noise, exposure) without them."""
    with_ = render(_ANATOMY, _plan(0, *findings, view=view), size, np.random.default_rng(9)).astype(int)
    without = render(_ANATOMY, _plan(0, view=view), size, np.random.default_rng(9)).astype(int)
    return with_ - without


def _where(difference, threshold=20):
    rows, cols = np.nonzero(np.abs(difference) > threshold)
    size = difference.shape[0]
    return len(rows), rows.mean() / size if len(rows) else 0.5, cols.mean() / size if len(cols) else 0.5


@pytest.mark.parametrize(
    "finding, image_side, height, sign",
    [
        # the patient's right is the image's left
        (Finding("effusion", 1, "right"), "left", "lower", 1),
        (Finding("effusion", 2, "left"), "right", "lower", 1),
        (Finding("pneumothorax", 1, "left"), "right", None, -1),
        (Finding("consolidation", 2, "right", "upper", seed=1), "left", "upper", 1),
        (Finding("consolidation", 1, "left", "lower", seed=2), "right", "lower", 1),
        (Finding("opacity", 2, "right", "mid", seed=3), "left", None, 1),
        (Finding("atelectasis", 2, "left", "lower", "plate", seed=4), "right", "lower", 1),
        (Finding("atelectasis", 2, "right", "upper", "lobar", seed=4), "left", "upper", 1),
        (Finding("lesion", 1, "left", "upper", "nodule", measure_cm=2, seed=5), "right", "upper", 1),
        (Finding("lesion", 1, "right", "lower", "mass", measure_cm=5, seed=5), "left", "lower", 1),
        (Finding("fracture", 2, "right", ribs=(5, 6), seed=6), "left", None, 1),
        (Finding("thickening", 1, "left"), "right", "upper", 1),
        (Finding("device", variant="pacemaker"), "right", "upper", 1),
        (Finding("device", variant="chest_tube", side="right"), "left", None, 1),
        (Finding("cardiomegaly", 2), "right", "lower", 1),  # the heart grows towards the patient's left
    ],
)
def test_a_finding_changes_the_image_where_the_report_puts_it(finding, image_side, height, sign):
    difference = _difference(finding)
    count, row, col = _where(difference)
    assert count >= 50, count
    assert (col < 0.5) == (image_side == "left"), col
    if height:
        assert (row < 0.5) == (height == "upper"), row
    changed = difference[np.abs(difference) > 20]
    assert np.sign(changed.sum()) == sign


@pytest.mark.parametrize(
    "finding",
    [Finding("mediastinum", 2), Finding("edema", 2),
     Finding("effusion", 2, "bilateral"), Finding("device", variant="et_tube", measure_cm=4)],
)
def test_central_and_bilateral_findings_are_drawn_about_the_midline(finding):
    count, row, col = _where(_difference(finding, view="AP" if finding.kind == "device" else "PA"))
    assert count >= 100 and 0.35 < col < 0.65


def test_an_effusion_brightens_its_costophrenic_angle_more_with_size():
    chest = Chest(_ANATOMY, geometry_for(_ANATOMY, _plan(0)), 128, (0.0, 0.0, 0.0, 1.0))
    lung = chest.lungs["right"]
    row, col = (int(round(v)) for v in chest.to_pixel(*lung.point(0.85, 0.93)))
    window = (slice(row - 3, row + 4), slice(col - 3, col + 4))
    gains = [_difference(Finding("effusion", grade, "right"))[window].mean() for grade in (1, 2, 3)]
    assert gains[0] > 30 and gains[0] <= gains[1] + 5 <= gains[2] + 10
    assert abs(_difference(Finding("effusion", 3, "left"))[window].mean()) < 5


def test_uncertain_findings_are_drawn_subtler_but_still_drawn():
    for kind, extra in (("effusion", {"side": "left"}), ("lesion", {"side": "right", "zone": "upper",
                                                                     "variant": "nodule", "measure_cm": 3}),
                        ("pneumothorax", {"side": "right"}), ("edema", {})):
        definite = Finding(kind, 1, **extra)
        sure, _, _ = _where(_difference(definite))
        possible, _, _ = _where(_difference(replace(definite, uncertain=True)))
        assert 20 <= possible < sure, kind


def test_cardiomegaly_widens_the_heart_with_grade():
    widths = []
    for grade in (None, 1, 2, 3):
        plan = _plan(0, *([Finding("cardiomegaly", grade)] if grade else []))
        chest = Chest(_ANATOMY, geometry_for(_ANATOMY, plan), 128, (0.0, 0.0, 0.0, 1.0))
        widths.append(chest.heart_half_width / _ANATOMY.width)
    assert widths[0] < 0.47 < 0.55 < widths[1] < widths[2] < widths[3]
