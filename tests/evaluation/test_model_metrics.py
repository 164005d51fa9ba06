"""BERTScore and SembScore through RadEval, on tiny random models placed where the loaders look.

Nothing is downloaded: a 6-layer random RoBERTa is saved as a local folder named ``distilroberta-base``
(so bert-score's baseline for that name applies), and a random CheXbert (bert-base-uncased shape, shrunk)
is saved both as a local folder and in the Hugging Face cache layout RadEval's ``F1CheXbert`` reads with
``HF_HUB_OFFLINE=1``. Parity: our numbers equal RadEval's own functions, and an independent computation in
this file, within 1e-6.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from s2d_align.evaluation import model_metrics, radeval_models
from s2d_align.evaluation.model_metrics import MetricSetupError
from tests.evaluation.conftest import HYPS, REFS, hub_cache

with radeval_models.quiet_import():  # RadEval's package import would call nltk.download
    import radeval  # noqa: F401


@pytest.fixture(scope="module")
def roberta_dir(metric_models):
    """A random 6-layer RoBERTa in a local folder named ``distilroberta-base`` (conftest.py)."""
    return metric_models["bertscore"]


@pytest.fixture(scope="module")
def chexbert_dir(metric_models):
    """A random CheXbert (bert-base-uncased shape, shrunk): config, tokenizer and chexbert.pth (conftest.py)."""
    return metric_models["semb"]


# ----------------------------------------------------------------------------- BERTScore


def _bertscore_by_hand(folder: Path, refs: list[str], hyps: list[str]) -> np.ndarray:
    """BERTScore F1 from its definition (bert-score 0.3.13): greedy cosine matching of layer-5 token states,
    no idf (special tokens weigh 0), rescaled with the baseline."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, add_prefix_space=True)
    model = AutoModel.from_pretrained(folder, output_hidden_states=True).eval()
    baseline = np.loadtxt(radeval_models.baseline_path("distilroberta-base"), delimiter=",", skiprows=1)[5, 1:]

    def states(text):
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            h = model(ids).hidden_states[5][0].double()
        return torch.nn.functional.normalize(h, dim=-1)

    out = []
    for ref, hyp in zip(refs, hyps):
        # every token, <s> and </s> included, is a match candidate; only the others are averaged (weight 0)
        sim = states(hyp) @ states(ref).T
        p, r = sim.max(dim=1).values[1:-1].mean().item(), sim.max(dim=0).values[1:-1].mean().item()
        f = 2 * p * r / (p + r)
        out.append((f - baseline[2]) / (1 - baseline[2]))
    return np.array(out)


def test_bertscore_matches_radeval_and_its_definition(roberta_dir):
    from radeval.metrics.bertscore._vendor import BERTScorer

    ours = model_metrics.bertscore(REFS, HYPS, str(roberta_dir), device="cpu").per_report["bertscore"]
    reference = BERTScorer(model_type=str(roberta_dir), num_layers=5, idf=False, lang="en",
                           rescale_with_baseline=True, device="cpu",
                           baseline_path=str(radeval_models.baseline_path("distilroberta-base")))
    _, _, f1 = reference.score(cands=HYPS, refs=REFS)
    np.testing.assert_allclose(ours, f1.double().numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours, _bertscore_by_hand(roberta_dir, REFS, HYPS), atol=1e-5, rtol=0)
    assert ours[3] == pytest.approx(1.0, abs=1e-6)  # identical texts: F1 1 before and after rescaling
    convention = model_metrics.bertscore(REFS[:1], HYPS[:1], str(roberta_dir), device="cpu").convention
    assert "layer 5, idf off, rescaled with bert-score's en baseline for distilroberta-base" in convention


def test_bertscore_refuses_a_model_too_shallow(tmp_path, roberta_dir):
    from transformers import AutoConfig

    shallow = tmp_path / "distilroberta-base"
    shallow.mkdir()
    config = AutoConfig.from_pretrained(roberta_dir)
    config.num_hidden_layers = 3
    config.save_pretrained(shallow)
    with pytest.raises(MetricSetupError, match="has 3 layer.*reads layer 5"):
        model_metrics.check(["bertscore"], {"bertscore": str(shallow)})


def test_bertscore_folder_needs_a_baseline_name(tmp_path, roberta_dir):
    import shutil

    other = tmp_path / "my-encoder"
    shutil.copytree(roberta_dir, other)
    with pytest.raises(MetricSetupError, match="no rescaling baseline for a model named 'my-encoder'"):
        model_metrics.check(["bertscore"], {"bertscore": str(other)})


# ----------------------------------------------------------------------------- SembScore


def _semb_by_hand(folder: Path, refs: list[str], hyps: list[str]) -> np.ndarray:
    from transformers import BertModel, BertTokenizer

    state = torch.load(folder / "chexbert.pth", weights_only=True)["model_state_dict"]
    from transformers import BertConfig

    bert = BertModel(BertConfig.from_pretrained(folder)).eval()
    bert.load_state_dict({k.removeprefix("module.bert."): v for k, v in state.items() if k.startswith("module.bert.")})
    tokenizer = BertTokenizer.from_pretrained(folder)

    def cls(text):
        with torch.no_grad():
            return bert(**tokenizer(text, return_tensors="pt")).last_hidden_state[0, 0].double().numpy()

    return np.array([float(cls(r) @ cls(h) / np.linalg.norm(cls(r)) / np.linalg.norm(cls(h)))
                     for r, h in zip(refs, hyps)])


def test_semb_from_a_local_folder_matches_its_definition(chexbert_dir):
    ours = model_metrics.semb(REFS, HYPS, str(chexbert_dir), device="cpu").per_report["semb"]
    np.testing.assert_allclose(ours, _semb_by_hand(chexbert_dir, REFS, HYPS), atol=1e-6, rtol=0)
    assert ours[3] == pytest.approx(1.0, abs=1e-6)


_HUB_SCRIPT = """
import json, sys
import numpy as np
from radeval.metrics.RadCliQv1.semb_score import semantic_embedding_scores
from s2d_align.evaluation import model_metrics
refs, hyps, local = json.loads(sys.argv[1])
reference = semantic_embedding_scores(refs, hyps, device="cpu")
hub = model_metrics.semb(refs, hyps, None, device="cpu").per_report["semb"]
folder = model_metrics.semb(refs, hyps, local, device="cpu").per_report["semb"]
print(json.dumps({"reference": reference.tolist(), "hub": hub.tolist(), "folder": folder.tolist()}))
"""


def test_semb_from_the_hub_cache_offline_matches_radeval(tmp_path, chexbert_dir):
    """Without --metric-model, SembScore loads what RadEval's F1CheXbert loads, from the HF cache, offline."""
    hub = tmp_path / "hf" / "hub"
    tokenizer_files = {n: chexbert_dir / n for n in ("config.json", "vocab.txt", "tokenizer_config.json")}
    hub_cache(hub, "bert-base-uncased", tokenizer_files)
    hub_cache(tmp_path / "xdg" / "chexbert", "StanfordAIMI/RRG_scorers", {"chexbert.pth": chexbert_dir / "chexbert.pth"})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(hub),
           "XDG_CACHE_HOME": str(tmp_path / "xdg"), "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _HUB_SCRIPT, json.dumps([REFS, HYPS, str(chexbert_dir)])],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["hub"], result["reference"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(result["folder"], result["reference"], atol=1e-6, rtol=0)


def test_semb_checkpoint_that_does_not_fit(tmp_path, chexbert_dir):
    import shutil

    folder = tmp_path / "chexbert"
    shutil.copytree(chexbert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"], config["num_attention_heads"] = 48, 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MetricSetupError, match="does not fit the CheXbert model"):
        model_metrics.semb(REFS, HYPS, str(folder), device="cpu")


# ----------------------------------------------------------------------------- setup errors


@pytest.mark.parametrize("items, message", [
    (["bertscore"], "expects NAME=ID_OR_PATH"),
    (["bleu=x"], "bleu: no such model metric"),
    (["semb=a", "semb=b"], "semb given twice"),
])
def test_metric_model_flag_errors(items, message):
    with pytest.raises(MetricSetupError, match=message):
        model_metrics.parse_metric_models(items)


def test_missing_folders_fail_before_work(tmp_path):
    with pytest.raises(MetricSetupError, match="no such folder"):
        model_metrics.check(["bertscore"], {"bertscore": str(tmp_path / "distilroberta-base")})
    (tmp_path / "chexbert").mkdir()
    with pytest.raises(MetricSetupError, match=r"missing config.json, chexbert.pth \(it must hold config.json"):
        model_metrics.check(["semb"], {"semb": str(tmp_path / "chexbert")})
    with pytest.raises(MetricSetupError, match="not among --metrics"):
        model_metrics.check([], {"semb": str(tmp_path / "chexbert")})


def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "radeval", None)  # as if RadEval were not installed
    with pytest.raises(MetricSetupError, match=r"bertscore, semb need the 'metrics' extra: pip install 's2d-align\[metrics\]'"):
        model_metrics.check(["bertscore", "semb"])
    assert model_metrics.check([]) == ""  # the core metrics ask nothing of it


# ----------------------------------------------------------------------------- the commands


def _predictions(path: Path, hyps: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "reference": r, "prediction": h}) + "\n"
                            for i, (r, h) in enumerate(zip(REFS, hyps))))
    return path


def test_cli_evaluate_and_compare_with_model_metrics(tmp_path, capsys, roberta_dir, chexbert_dir):
    from s2d_align.cli import main

    predictions = _predictions(tmp_path / "a.jsonl", HYPS)
    out = tmp_path / "m.json"
    models = ["--metric-model", f"bertscore={roberta_dir}", "--metric-model", f"semb={chexbert_dir}"]
    assert main(["evaluate", "--predictions", str(predictions), "--output", str(out), "--metrics",
                 "bleu,bertscore,semb", *models, "--bootstrap", "50", "--metric-device", "cpu"]) == 0
    metrics = json.loads(out.read_text())
    expected_bert = model_metrics.bertscore(REFS, HYPS, str(roberta_dir), "cpu").per_report["bertscore"]
    expected_semb = model_metrics.semb(REFS, HYPS, str(chexbert_dir), "cpu").per_report["semb"]
    assert metrics["bertscore"] == pytest.approx(expected_bert.mean(), abs=1e-9)
    assert metrics["semb"] == pytest.approx(expected_semb.mean(), abs=1e-9)
    low, high = metrics["confidence_intervals"]["bertscore"]
    assert low <= metrics["bertscore"] <= high and low < high
    assert "semb" in metrics["confidence_intervals"]
    assert "layer 5, idf off" in metrics["conventions"]["bertscore"]
    assert "cosine of the [CLS] embeddings" in metrics["conventions"]["semb"]
    assert metrics["versions"]["radeval"] == "2.2.1"
    rows = (tmp_path / "m.samples.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["id", "bleu4", "bertscore", "semb"]
    assert float(rows[1].split(",")[2]) == pytest.approx(expected_bert[0], abs=1e-9)
    assert "| BERTScore |" in (tmp_path / "m.md").read_text()

    other = _predictions(tmp_path / "b.jsonl", REFS)  # system B repeats the references: BERTScore 1
    assert main(["compare", str(predictions), str(other), "--metrics", "bertscore", *models[:2],
                 "--resamples", "50", "--output", str(tmp_path / "c.json")]) == 0
    compared = json.loads((tmp_path / "c.json").read_text())["metrics"]["bertscore"]
    assert compared["b"] == pytest.approx(1.0, abs=1e-6)
    assert compared["delta"] == pytest.approx(1.0 - expected_bert.mean(), abs=1e-6)


@pytest.mark.parametrize("metrics, message", [
    ("bleu,bertscor", "unknown metric(s) ['bertscor']"),
    ("bleu,ratescor", "unknown metric(s) ['ratescor']"),
])
def test_cli_bad_metric_names_fail_before_work(tmp_path, capsys, metrics, message):
    from s2d_align.cli import main

    out = tmp_path / "m.json"
    assert main(["evaluate", "--predictions", str(_predictions(tmp_path / "a.jsonl", HYPS)), "--output", str(out),
                 "--metrics", metrics]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_missing_model_fails_before_work(tmp_path, capsys):
    from s2d_align.cli import main

    out = tmp_path / "m.json"
    assert main(["evaluate", "--predictions", str(_predictions(tmp_path / "a.jsonl", HYPS)), "--output", str(out),
                 "--metrics", "bleu,bertscore", "--metric-model", f"bertscore={tmp_path / 'nowhere'}"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not out.exists()
