"""Natural-language metrics exactly as pycocoevalcap 1.2 computes them.

BLEU-1..4, ROUGE-L, CIDEr-D and METEOR are what every radiology report
generation paper prints, and all of them come from the COCO caption
toolkit. We call that toolkit (it is a dependency) rather than re-deriving
it, with the settings R2Gen's ``compute_scores`` used and the field kept:

- one reference per report, whitespace tokenisation of the (optionally
  cleaned) text, no PTB tokeniser;
- BLEU: corpus level, ``closest`` reference length, the toolkit's 1e-9 /
  1e-15 smoothing; per-sample BLEU is the toolkit's own per-image value;
- ROUGE-L: LCS F-measure with beta 1.2 on ``text.split(" ")`` (so a double
  space is an empty token, as in the toolkit), mean over reports;
- CIDEr-D: the toolkit's ``Cider`` (clipped, Gaussian length penalty with
  sigma 6, document frequencies from this test set's references), times 10,
  mean over reports;
- METEOR 1.5 (``-l en -norm``) through the toolkit's Java wrapper. Without
  Java it is skipped with the reason, never faked and never fatal.

Besides the scores, this module keeps the per-sample BLEU sufficient
statistics (lengths, n-gram matches and guesses), so bootstrap intervals can
recompute corpus BLEU on a resample without rerunning the toolkit.
"""

from __future__ import annotations

import atexit
import math
import shutil
import threading
from dataclasses import dataclass, field

import numpy as np

NLG_METRICS = ("bleu", "rouge_l", "cider", "meteor")
BLEU_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4")

# pycocoevalcap's BleuScorer constants: added to matches and to guesses.
_TINY = 1e-15
_SMALL = 1e-9

# Columns of the BLEU statistics matrix: test length, closest reference length,
# then guesses and matches for n = 1..4.
BLEU_STAT_COLUMNS = ("testlen", "reflen", "guess1", "guess2", "guess3", "guess4",
                     "correct1", "correct2", "correct3", "correct4")


@dataclass
class NLGResult:
    scores: dict[str, float] = field(default_factory=dict)
    """Corpus scores: ``bleu1``..``bleu4``, ``rouge_l``, ``cider``, ``meteor`` (those that ran)."""
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-report values: ``bleu4`` (the toolkit's per-image BLEU-4), ``rouge_l``, ``cider``, ``meteor``."""
    bleu_statistics: np.ndarray | None = None
    """(N, 10) float array, columns :data:`BLEU_STAT_COLUMNS`; None when BLEU was not asked for."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Metric -> why it did not run."""


def score_nlg(references: list[str], predictions: list[str], metrics: tuple[str, ...] = NLG_METRICS,
              meteor_timeout_s: float | None = None) -> NLGResult:
    """Score ``predictions`` against ``references`` (same order, one reference each)."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    if not references:
        raise ValueError("nothing to score: no reports")
    unknown = set(metrics) - set(NLG_METRICS)
    if unknown:
        raise ValueError(f"unknown NLG metric(s) {sorted(unknown)}; choose from {', '.join(NLG_METRICS)}")
    result = NLGResult()
    gts = {i: [ref] for i, ref in enumerate(references)}
    res = {i: [pred] for i, pred in enumerate(predictions)}
    if "bleu" in metrics:
        _bleu(references, predictions, result)
    if "rouge_l" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        score, per = Rouge().compute_score(gts, res)
        result.scores["rouge_l"] = float(score)
        result.per_sample["rouge_l"] = np.asarray(per, dtype=float)
    if "cider" in metrics:
        from pycocoevalcap.cider.cider import Cider

        score, per = Cider().compute_score(gts, res)
        result.scores["cider"] = float(score)
        result.per_sample["cider"] = np.asarray(per, dtype=float)
    if "meteor" in metrics:
        timeout = meteor_timeout_s if meteor_timeout_s is not None else 120.0 + 0.05 * len(references)
        outcome = _meteor(references, predictions, timeout)
        if isinstance(outcome, str):
            result.skipped["meteor"] = outcome
        else:
            result.scores["meteor"], result.per_sample["meteor"] = outcome
    return result


def _bleu(references: list[str], predictions: list[str], result: NLGResult) -> None:
    """The toolkit's ``Bleu(4).compute_score`` (closest reference length), keeping its statistics.

    ``Bleu.compute_score`` is a thin loop around ``BleuScorer``; we run that
    loop ourselves so the cooked per-sample counts stay reachable.
    """
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=4)
    for prediction, reference in zip(predictions, references):
        scorer += (prediction, [reference])
    scores, per_image = scorer.compute_score(option="closest", verbose=0)
    for key, value in zip(BLEU_KEYS, scores):
        result.scores[key] = float(value)
    result.per_sample["bleu4"] = np.asarray(per_image[3], dtype=float)
    stats = np.empty((len(scorer.ctest), len(BLEU_STAT_COLUMNS)), dtype=float)
    for row, comps in enumerate(scorer.ctest):
        testlen = comps["testlen"]
        # 'closest' reference length, with the toolkit's tie-break (the shorter one).
        reflen = min((abs(length - testlen), length) for length in comps["reflen"])[1]
        stats[row] = [testlen, reflen, *comps["guess"], *comps["correct"]]
    result.bleu_statistics = stats


def bleu_from_statistics(sums: np.ndarray) -> np.ndarray:
    """Corpus BLEU-1..4 from summed statistics, the toolkit's formula vectorised.

    ``sums`` is (..., 10) in :data:`BLEU_STAT_COLUMNS` order (a column sum of
    :attr:`NLGResult.bleu_statistics`, or one row per bootstrap resample);
    returns (..., 4). The operations and their order are the toolkit's, so on
    the full set this reproduces ``Bleu(4)`` to the last digit.
    """
    sums = np.asarray(sums, dtype=float)
    testlen, reflen = sums[..., 0], sums[..., 1]
    guess, correct = sums[..., 2:6], sums[..., 6:10]
    out = np.empty(sums.shape[:-1] + (4,), dtype=float)
    product = np.ones(sums.shape[:-1], dtype=float)
    for k in range(4):
        product = product * ((correct[..., k] + _TINY) / (guess[..., k] + _SMALL))
        out[..., k] = product ** (1.0 / (k + 1))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    brevity = np.where(ratio < 1, np.exp(1 - 1 / np.where(ratio < 1, ratio, 1.0)), 1.0)
    return out * brevity[..., None]


def java_version() -> str | None:
    """The first line of ``java -version``, or None when Java is not on PATH."""
    import subprocess

    if shutil.which("java") is None:
        return None
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[0] if lines else "unknown"


_JAR = None  # one METEOR jar per process: starting the JVM and loading its paraphrase table takes seconds
_STOP_AT_EXIT = False


def _meteor_jar():
    """The running METEOR wrapper, started on first use and reused (the jar keeps no state between EVALs)."""
    global _JAR, _STOP_AT_EXIT
    if _JAR is not None and _JAR.meteor_p.poll() is not None:
        _stop_jar()  # it died since the last call: clean up and start another
    if _JAR is None:
        from pycocoevalcap.meteor.meteor import Meteor

        if not _STOP_AT_EXIT:
            atexit.register(_stop_jar)
            _STOP_AT_EXIT = True
        _JAR = Meteor()
    return _JAR


def _stop_jar() -> list[str]:
    """Stop the jar (if any) and return what it wrote to stderr, for the error message."""
    global _JAR
    jar, _JAR = _JAR, None
    if jar is None:
        return []
    if jar.lock.locked():  # the wrapper does not release its lock on error; its __del__ would block
        jar.lock.release()
    process = jar.meteor_p
    if process.poll() is None:
        process.kill()
    process.wait()
    try:
        lines = process.stderr.read().decode("utf-8", "replace").strip().splitlines()
    except (OSError, ValueError):
        lines = []
    for stream in (process.stdin, process.stdout, process.stderr):
        try:
            stream.close()
        except OSError:  # a pipe the killed jar left half-written
            pass
    return lines


def _meteor(references: list[str], predictions: list[str], timeout_s: float) -> tuple[float, np.ndarray] | str:
    """METEOR through pycocoevalcap's wrapper, or the reason it could not run.

    The wrapper speaks a line protocol with the jar: a line break inside a
    report, or ``|||`` inside a reference, would desynchronise it and hang the
    run. Line breaks become spaces and ``|||`` is deleted from the reference
    before sending (the wrapper itself deletes it from the prediction); with
    ``-norm`` the jar re-tokenises the text anyway, so the score is unchanged.
    A watchdog kills the jar after ``timeout_s`` so a stuck JVM cannot hang
    the evaluation.
    """
    if shutil.which("java") is None:
        return "Java is not installed (no 'java' on PATH); install a Java runtime (8 or later) to compute METEOR"

    def one_line(text: str) -> str:
        return text.replace("\r", " ").replace("\n", " ")

    gts = {i: [one_line(ref).replace("|||", "")] for i, ref in enumerate(references)}
    res = {i: [one_line(pred)] for i, pred in enumerate(predictions)}
    try:
        jar = _meteor_jar()
    except OSError as err:
        return f"the METEOR jar could not start ({err})"
    watchdog = threading.Timer(timeout_s, jar.meteor_p.kill)
    watchdog.start()
    try:
        score, per = jar.compute_score(gts, res)
    except (ValueError, OSError) as err:
        timed_out = watchdog.finished.is_set()  # set only by firing: cancel() has not run yet
        lines = _stop_jar()
        reason = f"timed out after {timeout_s:.0f} s" if timed_out else f"failed ({type(err).__name__}: {err})"
        return f"METEOR {reason}" + (f": {lines[0]}" if lines else "")
    finally:
        watchdog.cancel()
    if not math.isfinite(score):
        return f"METEOR returned a non-finite score ({score})"
    return float(score), np.asarray(per, dtype=float)
