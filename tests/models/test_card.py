"""The model card of an exported folder: every section, the metrics table's rules, the JSON block's cap."""

from s2d_align.config import load_config
from s2d_align.models.card import model_card

META = {"epoch": 3, "step": 60}
INFO = {"name": "demo-model", "stage": "s3", "source_checkpoint": "runs/demo/checkpoints/s3"}
METRICS = {"bleu_4": 0.12345, "n": 25, "flag": True, "confidence_intervals": {"bleu_4": [0.1, 0.2]}}

CARD = """# demo-model

An S2D-Align radiology report generator: a chest radiograph in, the FINDINGS section of a report out. **Research use only. Not a medical device; not for clinical use or diagnosis.**

## Model

- vision encoder (frozen): `runs/demo/base_models/vision`
- LLM: `runs/demo/base_models/llm` (float32), LoRA r=8, alpha=16
- connector: `sma` with 32 memory queries of width 128
- exported from stage `s3` (`runs/demo/checkpoints/s3`)

Generation reads the image alone; the text encoder used in training is not needed.

## Training data and recipe

- manifest: `runs/demo/manifest.jsonl`; up to 1 image(s) per study
- curriculum (paper, Sec. 3): image only, then with the reference report, then with key phrases

| stage | context | LLM | epochs | lr |
|---|---|---|---|---|
| s1 | image | LLM frozen | 4 | 0.003 |
| s2 | image+reference | LoRA on | 2 | 0.002 |
| s3 | image+reference+key_phrases | LoRA on | 3 | 0.002 |

Last stage: epoch 3, step 60.

## Test metrics

Scored on the run's test split, generating from the image alone (paper, Eq. 5), with the settings below; reports cleaned with `mimic_cxr` and labelled with the `rules` CheXpert labeler before scoring (see `docs/evaluation.md` of s2d-align for the conventions).

| metric | value |
|---|---|
| bleu_4 | 0.1235 |
| n | 25 |

Further entries of `metrics.json`:

```json
{
  "confidence_intervals": {
    "bleu_4": [
      0.1,
      0.2
    ]
  }
}
```

## Generation settings

num_beams=1, max_new_tokens=100, min_new_tokens=5, length_penalty=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0

## Intended use and limits

- Intended for research on report generation: reproducing and comparing methods, studying what the model attends to.
- Not for clinical use. Its reports can state findings that are absent and miss findings that are present; they have not been validated by radiologists.
- It knows only the data it was trained on: other hospitals, devices, views, populations or languages may fail silently. A model trained on the synthetic phantom knows nothing about real radiographs.
- The grounding maps show where the adapter's memory looked, not a validated localisation.

## Use

```python
from s2d_align import ReportGenerator
gen = ReportGenerator.from_pretrained("demo-model")
print(gen("cxr.png").text)
```

or `s2d-align report --model demo-model cxr.png`.
"""
"""The demo recipe's card: floats to four places, integers as they are, booleans left out, nested entries as JSON."""


def test_the_card_of_the_demo_recipe():
    assert model_card(load_config("demo"), META, INFO, METRICS) == CARD


def test_without_metrics_the_card_says_so_and_a_long_json_block_is_cut():
    config = load_config("demo")
    card = model_card(config, {}, {"name": "m", "source_checkpoint": "c"}, None)
    assert ("## Test metrics\n\nNo `metrics.json` was found in the run folder, so this card reports no test figures.\n\n"
            "## Generation settings") in card
    assert "exported from stage `None` (`c`)" in card and "Last stage: epoch None, step None." in card
    long = model_card(config, META, INFO, {"per_report": {str(i): i for i in range(2000)}})
    block = long.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert len(block) == 4000 and block.startswith('{\n  "per_report": {\n    "0": 0,')
    assert "| metric | value |\n|---|---|\n\nFurther entries" in long  # no flat figures: an empty table
