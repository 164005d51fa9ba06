"""How long does ``evaluate`` take next to pycocoevalcap alone, on a MIMIC-CXR-sized test set?

The budget (evaluation issue, "Speed"): scoring 3,858 pairs of ~60-word
reports with every NLG metric but METEOR and the ``rules`` labeler -- that is
``evaluate`` with its defaults otherwise: cleaning, CE from both sides,
bootstrap intervals (1,000 resamples), the JSON, Markdown and CSV files --
must take at most 2.5x the time pycocoevalcap alone needs for BLEU + ROUGE-L +
CIDEr on the same pairs. Both are timed here, side by side in one process,
alternating, on synthetic MIMIC-like report pairs generated below (MIMIC-CXR
itself is credentialed). The generator draws sentences from templates with
random sizes, sides, lobes, devices, dates and measurements, so most
sentences are distinct and the labeler's sentence cache gets little free
ride (real generated reports repeat far more); the distinct share is
printed.

    PYTHONPATH=src python benchmarks/bench_evaluate.py [--pairs 3858] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

SIDES = ("left", "right", "bilateral")
LOBES = ("upper", "middle", "lower")
SIZES = ("small", "moderate", "large", "trace", "tiny")
DEGREES = ("mild", "moderate", "severe", "minimal")
SHAPES = ("patchy", "hazy", "streaky", "linear", "ill-defined", "confluent")
CAUSES = ("may reflect atelectasis", "likely represents atelectasis", "concerning for pneumonia",
          "could represent aspiration or pneumonia", "is compatible with scarring", "may be due to infection")
DEVICES = ("An endotracheal tube", "A right internal jugular central venous catheter", "A nasogastric tube",
           "A left-sided PICC line", "A right chest tube", "A dual-lead pacemaker")
ENDS = ("terminates {n} cm above the carina", "ends in the mid SVC", "tip is in the stomach",
        "is in unchanged position", "terminates at the cavoatrial junction", "projects over the right atrium")
TEMPLATES = (
    lambda r: f"The heart size is {r.choice(('normal', 'mildly enlarged', 'moderately enlarged', 'top normal', 'stable'))}.",
    lambda r: f"{r.choice(DEGREES).capitalize()} cardiomegaly {r.choice(('is present', 'is unchanged', 'persists'))}.",
    lambda r: f"The mediastinal and hilar contours are {r.choice(('normal', 'unremarkable', 'within normal limits', 'stable'))}.",
    lambda r: f"There is a {r.choice(SIZES)} {r.choice(SIDES)} pleural effusion {r.choice(('', 'with adjacent atelectasis', 'which has increased', 'which is decreased in size'))}.",
    lambda r: "No pleural effusion or pneumothorax is seen.",
    lambda r: f"{r.choice(SHAPES).capitalize()} opacity in the {r.choice(SIDES[:2])} {r.choice(LOBES)} lobe {r.choice(CAUSES)}.",
    lambda r: f"There is {r.choice(DEGREES)} pulmonary {r.choice(('edema', 'vascular congestion', 'interstitial edema'))}.",
    lambda r: f"{r.choice(DEVICES)} {r.choice(ENDS).format(n=r.randint(2, 7))}.",
    lambda r: f"Compared to the prior study from {r.randint(1, 28)} days ago, there is {r.choice(('interval improvement', 'no significant change', 'worsening'))} of the {r.choice(SIDES[:2])} basilar {r.choice(('opacity', 'atelectasis', 'effusion', 'consolidation'))}.",
    lambda r: f"No focal consolidation is seen in the {r.choice(SIDES)} lung{r.choice(('', 's'))}.",
    lambda r: f"{r.choice(('Mild', 'Multilevel', 'Moderate'))} degenerative changes of the {r.choice(('thoracic', 'lower thoracic', 'cervical'))} spine are noted.",
    lambda r: f"A {r.randint(3, 25)} mm nodule is seen in the {r.choice(SIDES[:2])} {r.choice(LOBES)} lobe.",
    lambda r: f"There is no {r.choice(('', 'definite ', 'evidence of '))}pneumothorax.",
    lambda r: f"Healed {r.choice(SIDES[:2])} {r.randint(3, 11)}th rib fracture{r.choice(('', 's'))} {r.choice(('are', 'is'))} again noted.",
    lambda r: f"Median sternotomy wires and mediastinal clips are {r.choice(('intact', 'unchanged', 'noted'))}.",
    lambda r: f"The lungs are {r.choice(('clear', 'well expanded and clear', 'hyperinflated', 'low in volume'))}.",
    lambda r: f"The osseous structures are {r.choice(('unremarkable', 'intact', 'diffusely demineralized'))}.",
)


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
PREFIXES = (
    lambda r: "As before, ",
    lambda r: "Again, ",
    lambda r: f"Compared to the radiograph of {r.choice(MONTHS)} {r.randint(1, 28)}, ",
    lambda r: f"On the {r.choice(('frontal', 'lateral', 'portable'))} view, ",
)
SUFFIXES = (
    lambda r: f" measuring {r.randint(1, 9)}.{r.randint(0, 9)} cm",
    lambda r: f" since {r.choice(MONTHS)} {r.randint(2005, 2019)}",
    lambda r: f" at the level of the {r.choice(('T', 'C'))}{r.randint(1, 12)} vertebral body",
    lambda r: f" on image {r.randint(1, 4)} of {r.randint(4, 6)}",
)


def sentence(rng: random.Random) -> str:
    """One template sentence; a prefix or suffix with numbers and dates makes most of them distinct."""
    text = " ".join(rng.choice(TEMPLATES)(rng).split()).rstrip(".")
    if rng.random() < 0.5:
        prefix = rng.choice(PREFIXES)(rng)
        text = prefix + text[0].lower() + text[1:]
    if rng.random() < 0.5:
        text += rng.choice(SUFFIXES)(rng)
    return text + "."


def report(rng: random.Random, words: int = 60) -> list[str]:
    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < words:
        sentences.append(sentence(rng))
    return sentences


def pairs(count: int, seed: int) -> list[dict[str, str]]:
    """``count`` reference/prediction pairs; a prediction keeps, rewrites or drops each reference sentence."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        reference = report(rng)
        prediction = []
        for kept in reference:
            roll = rng.random()
            if roll < 0.5:
                prediction.append(kept)
            elif roll < 0.85:
                prediction.append(sentence(rng))
        out.append({"id": f"s{i:05d}", "reference": " ".join(reference), "prediction": " ".join(prediction)})
    return out


def time_pycocoevalcap(records: list[dict[str, str]]) -> float:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    started = time.perf_counter()
    gts = {r["id"]: [r["reference"]] for r in records}
    res = {r["id"]: [r["prediction"]] for r in records}
    Bleu(4).compute_score(gts, res, verbose=0)
    Rouge().compute_score(gts, res)
    Cider().compute_score(gts, res)
    return time.perf_counter() - started


def time_evaluate(path: Path, out: Path) -> tuple[float, dict]:
    from s2d_align.evaluation.report import evaluate_file

    started = time.perf_counter()
    metrics = evaluate_file(path, out, metrics="bleu,rouge_l,cider,ce", labeler="rules")
    return time.perf_counter() - started, metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3858)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    records = pairs(args.pairs, args.seed)
    words = statistics.mean(len(r["reference"].split()) for r in records)
    sentences = [s for r in records for s in (r["reference"] + " " + r["prediction"]).split(". ") if s]
    print(f"{len(records)} pairs, {words:.1f} words per reference, "
          f"{len(set(sentences)) / len(sentences):.0%} of {len(sentences)} sentences distinct")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "predictions.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        coco, ours = [], []
        for repeat in range(args.repeats):
            coco.append(time_pycocoevalcap(records))
            seconds, metrics = time_evaluate(path, Path(folder) / "metrics.json")
            ours.append(seconds)
            print(f"repeat {repeat + 1}: pycocoevalcap BLEU+ROUGE-L+CIDEr {coco[-1]:.2f} s, "
                  f"evaluate {ours[-1]:.2f} s, ratio {ours[-1] / coco[-1]:.2f}")
    print(f"median: pycocoevalcap {statistics.median(coco):.2f} s, evaluate {statistics.median(ours):.2f} s, "
          f"ratio {statistics.median(ours) / statistics.median(coco):.2f} (budget 2.50)")
    print(f"B@4 {metrics['bleu4']:.4f}  R-L {metrics['rouge_l']:.4f}  CIDEr {metrics['cider']:.4f}  "
          f"CE-F1 {metrics['ce_f1']:.4f}  bootstrap {metrics['bootstrap']['resamples']} resamples")


if __name__ == "__main__":
    main()
