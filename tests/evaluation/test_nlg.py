"""NLG metrics: exact pycocoevalcap 1.2 values on fixed inputs, edge cases included.

The literals below were produced by pycocoevalcap 1.2's own ``Bleu(4)``,
``Rouge``, ``Cider`` and ``Meteor`` classes on these strings; each test also
re-checks parity against the toolkit called directly.
"""

import shutil

import numpy as np
import pytest

from s2d_align.evaluation import nlg
from s2d_align.evaluation.nlg import bleu_from_statistics, score_nlg

CORPUS = (
    ["the heart is normal in size . no pleural effusion .", "mild cardiomegaly . small left pleural effusion .",
     "no acute cardiopulmonary process .", "the lungs are clear ."],
    ["the heart is normal . no effusion .", "mild cardiomegaly with small effusion .",
     "no acute cardiopulmonary process .", "clear lungs bilaterally ."],
)

# name: (references, predictions, BLEU-1..4, ROUGE-L, CIDEr-D)
PINNED = {
    "corpus": (*CORPUS, [0.7033917107838381, 0.5601070753234008, 0.4318923882411979, 0.3606951076445747],
               0.7377133159966202, 4.4886905686427125),
    "empty prediction": (["no acute cardiopulmonary process .", "the lungs are clear ."], ["", "the lungs are clear ."],
                         [0.36787944102429077, 0.3678794410150938, 0.36787944100180925, 0.3678794409798387], 0.5, 5.0),
    "no 4-gram overlap": (["the heart is normal in size", "no pleural effusion is seen"],
                          ["heart normal size in the", "effusion pleural no seen is"],
                          [0.9048374178549924, 1.011638987441927e-08, 2.4897561047863045e-11, 1.3669267563748645e-12],
                          0.46832844574780064, 2.4827588959298956),
    # ROUGE-L splits on single spaces, so a double space is an empty token; BLEU splits on any whitespace.
    "double spaces": (["no  pleural effusion .  heart size normal ."], ["no pleural  effusion . heart  size normal ."],
                      [0.9999999997500004, 0.9999999997410718, 0.9999999997301591, 0.9999999997163694], 0.8, 0.0),
    # One report: CIDEr-D's document frequency makes every idf log(1) - log(1) = 0.
    "single sample": (["mild cardiomegaly . no pleural effusion ."], ["mild cardiomegaly . small pleural effusion ."],
                      [0.8571428568979593, 0.7559289457934757, 0.6114214172745694, 8.694417436006866e-05],
                      0.8571428571428571, 0.0),
}


@pytest.mark.parametrize("name", PINNED)
def test_pinned_values(name):
    refs, preds, bleu, rouge, cider = PINNED[name]
    result = score_nlg(refs, preds, ("bleu", "rouge_l", "cider"))
    assert [result.scores[f"bleu{k}"] for k in range(1, 5)] == bleu
    assert result.scores["rouge_l"] == rouge
    assert result.scores["cider"] == cider


@pytest.mark.parametrize("name", PINNED)
def test_parity_with_the_toolkit_called_directly(name):
    # BLEU is computed by our own code from n-gram statistics (for the bootstrap); ROUGE-L and
    # CIDEr-D are pycocoevalcap's own scorers, pinned by test_pinned_values.
    from pycocoevalcap.bleu.bleu import Bleu

    refs, preds = PINNED[name][:2]
    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [p] for i, p in enumerate(preds)}
    result = score_nlg(refs, preds, ("bleu", "rouge_l", "cider"))
    bleu, per_image = Bleu(4).compute_score(gts, res, verbose=0)
    assert [result.scores[f"bleu{k}"] for k in range(1, 5)] == bleu
    assert result.per_sample["bleu4"].tolist() == per_image[3]


@pytest.mark.parametrize("name", PINNED)
def test_bleu_from_summed_statistics_equals_the_toolkit(name):
    refs, preds, bleu = PINNED[name][:3]
    result = score_nlg(refs, preds, ("bleu",))
    assert bleu_from_statistics(result.bleu_statistics.sum(axis=0)).tolist() == bleu


def test_statistics_columns_on_a_hand_counted_pair():
    result = score_nlg(["a b c d"], ["a b x"], ("bleu",))
    # testlen 3, reflen 4, guesses 3/2/1/0, matches 2 (a, b) / 1 (a b) / 0 / 0
    assert result.bleu_statistics.tolist() == [[3, 4, 3, 2, 1, 0, 2, 1, 0, 0]]


def test_bleu_statistics_vectorise_over_resamples():
    refs, preds = CORPUS
    stats = score_nlg(refs, preds, ("bleu",)).bleu_statistics
    weights = np.array([[1, 1, 1, 1], [2, 0, 1, 1], [0, 0, 4, 0]], dtype=float)
    batch = bleu_from_statistics(weights @ stats)
    assert batch.shape == (3, 4)
    assert batch[0].tolist() == bleu_from_statistics(stats.sum(axis=0)).tolist()
    one = score_nlg(["no acute cardiopulmonary process ."] * 4, ["no acute cardiopulmonary process ."] * 4, ("bleu",))
    assert batch[2].tolist() == bleu_from_statistics(one.bleu_statistics.sum(axis=0)).tolist()


def test_references_are_not_truncated():
    long_reference = " ".join(["word"] * 300)
    result = score_nlg([long_reference], [long_reference], ("bleu",))
    assert result.bleu_statistics[0, 1] == 300


def test_mismatched_lengths_and_unknown_metrics_are_errors():
    with pytest.raises(ValueError, match="2 references but 1 predictions"):
        score_nlg(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unknown NLG metric"):
        score_nlg(["a"], ["a"], ("spice",))


def test_meteor_without_java_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(nlg.shutil, "which", lambda name: None)
    result = score_nlg(*CORPUS, ("bleu", "meteor"))
    assert "meteor" not in result.scores
    assert "Java" in result.skipped["meteor"]
    assert result.scores["bleu4"] == PINNED["corpus"][2][3]


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")


@needs_java
def test_meteor_pinned_and_robust_to_line_breaks():
    result = score_nlg(*CORPUS, ("meteor",), meteor_timeout_s=120)
    assert result.scores["meteor"] == 0.3751475716927201
    assert len(result.per_sample["meteor"]) == 4
    # A line break would desynchronise the jar's line protocol; with -norm it scores as a space.
    broken = score_nlg([r.replace(" . ", " .\n") for r in CORPUS[0]], CORPUS[1], ("meteor",), meteor_timeout_s=120)
    assert broken.scores["meteor"] == result.scores["meteor"]


@needs_java
def test_meteor_of_an_empty_prediction():
    result = score_nlg(*PINNED["empty prediction"][:2], ("meteor",), meteor_timeout_s=120)
    assert result.scores["meteor"] == 0.4904632152588556
    assert result.per_sample["meteor"][0] == 0.0


@needs_java
def test_a_stuck_meteor_is_killed_and_reported():
    refs, preds = CORPUS
    result = score_nlg(refs * 100, preds * 100, ("bleu", "meteor"), meteor_timeout_s=0.001)
    assert result.skipped["meteor"].startswith("METEOR timed out after 0 s")
    assert "bleu4" in result.scores
