"""The training dataset's documented behaviour: a random key-phrase subset per epoch, truncated reports."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from s2d_align.data.dataset import (
    KEY_PHRASE_SEPARATOR,
    Collator,
    ImageOnlyDataset,
    ImageOnlyItem,
    TrainingDataset,
    image_only_items,
    load_views,
)
from s2d_align.data.manifest import KeyPhrase, Study, read_manifest


def _dataset(tiny_world, phrases, max_key_phrases):
    first = read_manifest(tiny_world.manifest)[0]
    study = Study(id="k", split="train", subject_id="p", study_id="k", images=first.images, findings="f",
                  key_phrases=tuple(KeyPhrase(p) for p in phrases))
    return TrainingDataset([study], {}, tiny_world.manifest, lambda images: torch.zeros(len(images), 3, 4, 4),
                           max_images=1, max_key_phrases=max_key_phrases, seed=0)


def test_each_epoch_draws_a_random_ordered_subset_of_the_key_phrases(tiny_world):
    phrases = [f"finding {i}" for i in range(6)]
    dataset = _dataset(tiny_world, phrases, max_key_phrases=8)
    drawn = []
    for epoch in range(12):
        dataset.set_epoch(epoch)
        drawn.append(dataset[0]["key_phrases"].split(KEY_PHRASE_SEPARATOR))
    assert all(1 <= len(d) <= 6 and d == [p for p in phrases if p in d] for d in drawn)  # a subset, in order
    assert len({len(d) for d in drawn}) >= 3 and len({tuple(d) for d in drawn}) >= 8  # sizes and members vary
    dataset.set_epoch(3)
    assert dataset[0]["key_phrases"].split(KEY_PHRASE_SEPARATOR) == drawn[3]  # reproducible
    capped = _dataset(tiny_world, phrases, max_key_phrases=2)
    for epoch in range(12):
        capped.set_epoch(epoch)
        assert 1 <= len(capped[0]["key_phrases"].split(KEY_PHRASE_SEPARATOR)) <= 2


def test_reports_are_truncated_to_max_report_tokens_and_end_with_eos(tiny_world):
    tokenizer = AutoTokenizer.from_pretrained(tiny_world.models["llm"])
    collate = Collator(tokenizer, tokenizer, max_report_tokens=5, max_text_tokens=8)
    long = "the heart is normal in size and the lungs are clear without effusion"
    assert len(tokenizer(long, add_special_tokens=False).input_ids) > 5
    ids, mask = collate.reports([long, "clear"])
    assert ids.shape == (2, 5)
    assert ids[0].tolist() == tokenizer(long, add_special_tokens=False).input_ids[:4] + [tokenizer.eos_token_id]
    short = tokenizer("clear", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    assert mask[1].tolist() == [1] * len(short) + [0] * (5 - len(short))


# --------------------------------------------------------------------------- without the tiny world: a word-level
# tokenizer and three PNGs written by the test, so each behaviour is pinned to exact ids and values.

WORDS = ["[PAD]", "[UNK]", "</s>", "heart", "normal", "lungs", "clear", "effusion", "small", "left", ".", ";"]


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>")


def _ids(text):
    return [WORDS.index(w) for w in text.replace(".", " .").replace(";", " ;").split()]


def _shade_preprocess(images):
    """Each image -> a (3, 2, 2) float64 block of its top-left grey level: the dtype and the order show."""
    return torch.stack([torch.full((3, 2, 2), float(np.asarray(image)[0, 0]), dtype=torch.float64) for image in images])


@pytest.fixture()
def pngs(tmp_path):
    paths = []
    for shade in (10, 20, 30):
        path = tmp_path / "images" / f"shade{shade}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("L", (4, 4), shade).save(path)
        paths.append(path)
    return paths


def test_load_views_pads_to_max_images_keeps_the_dtype_and_masks_the_padding(pngs):
    pixels, mask = load_views(pngs[:2], _shade_preprocess, max_images=3)
    assert pixels.shape == (3, 3, 2, 2) and pixels.dtype == torch.float64
    assert pixels[:, 0, 0, 0].tolist() == [10.0, 20.0, 0.0]
    assert mask.dtype == torch.bool and mask.tolist() == [True, True, False]
    pixels, mask = load_views(pngs, _shade_preprocess, max_images=2)  # only the first max_images are read
    assert pixels[:, 0, 0, 0].tolist() == [10.0, 20.0] and mask.tolist() == [True, True]


def _studies(pngs):
    base = pngs[0].parent.parent
    return base / "manifest.jsonl", [
        Study(id="a", split="train", subject_id="p", study_id="a", images=("images/shade10.png", "images/shade20.png"),
              findings="heart normal .", key_phrases=tuple(KeyPhrase(p) for p in ("small effusion", "left", "clear"))),
        Study(id="b", split="train", subject_id="p", study_id="b", images=("images/shade30.png",),
              findings="lungs clear .", reference_id="a"),
    ]


def test_a_training_item_holds_the_study_its_reference_and_its_phrases(pngs):
    manifest, studies = _studies(pngs)
    findings = {s.id: s.findings for s in studies}
    dataset = TrainingDataset(studies, findings, manifest, _shade_preprocess, max_images=2, max_key_phrases=3)
    first, second = dataset[0], dataset[1]
    assert set(first) == {"id", "pixel_values", "image_mask", "report", "reference", "key_phrases"}
    assert (first["id"], first["report"], first["reference"]) == ("a", "heart normal .", "")  # no reference: empty
    assert first["pixel_values"][:, 0, 0, 0].tolist() == [10.0, 20.0] and first["image_mask"].tolist() == [True, True]
    assert (second["id"], second["reference"], second["key_phrases"]) == ("b", "heart normal .", "")
    assert second["pixel_values"][:, 0, 0, 0].tolist() == [30.0, 0.0] and second["image_mask"].tolist() == [True, False]
    assert len(dataset) == 2


def test_phrase_subsets_take_every_size_from_one_and_depend_on_seed_and_epoch_only(pngs):
    manifest, studies = _studies(pngs)
    findings = {s.id: s.findings for s in studies}

    def draws(**kwargs):
        dataset = TrainingDataset(studies, findings, manifest, _shade_preprocess, 2, 3, **kwargs)
        out = [dataset[0]["key_phrases"]]  # the epoch before any set_epoch
        for epoch in range(30):
            dataset.set_epoch(epoch)
            out.append(dataset[0]["key_phrases"])
        return out

    default, zero, one = draws(), draws(seed=0), draws(seed=1)
    assert default == zero and default != one
    assert default[0] == default[1]  # a new dataset is at epoch 0
    sizes = {len(d.split(KEY_PHRASE_SEPARATOR)) for d in default}
    assert sizes == {1, 2, 3}
    assert {p for d in default for p in d.split(KEY_PHRASE_SEPARATOR)} == {"small effusion", "left", "clear"}


def test_image_only_items_resolve_paths_against_the_manifest_and_carry_the_truth(pngs):
    manifest, studies = _studies(pngs)
    items = image_only_items(studies, manifest)
    assert items[0] == ImageOnlyItem("a", (pngs[0].parent / "shade10.png", pngs[0].parent / "shade20.png"), "heart normal .")
    dataset = ImageOnlyDataset(items, _shade_preprocess, max_images=1)
    item = dataset[1]
    assert set(item) == {"id", "pixel_values", "image_mask", "findings"} and len(dataset) == 2
    assert (item["id"], item["findings"]) == ("b", "lungs clear .")
    assert item["pixel_values"][:, 0, 0, 0].tolist() == [30.0] and item["image_mask"].tolist() == [True]


def test_the_collator_tokenises_reports_with_eos_and_aux_texts_truncated(pngs):
    tokenizer = _word_tokenizer()
    collate = Collator(tokenizer, tokenizer, max_report_tokens=16, max_text_tokens=3)
    manifest, studies = _studies(pngs)
    dataset = TrainingDataset(studies, {s.id: s.findings for s in studies}, manifest, _shade_preprocess, 2, 3)
    batch = collate([dataset[0], dataset[1]])
    assert set(batch) == {"ids", "pixel_values", "image_mask", "report_ids", "report_mask", "reference_ids",
                          "reference_mask", "key_phrase_ids", "key_phrase_mask"}
    assert batch["ids"] == ["a", "b"] and batch["pixel_values"].shape == (2, 2, 3, 2, 2)
    assert batch["image_mask"].tolist() == [[True, True], [True, False]]
    eos = WORDS.index("</s>")
    assert batch["report_ids"].tolist() == [_ids("heart normal .") + [eos], _ids("lungs clear .") + [eos]]
    assert batch["report_ids"].dtype == batch["report_mask"].dtype == torch.long
    # The reference: "" for study a, a's findings for b; cut at max_text_tokens = 3 and padded.
    assert batch["reference_ids"].tolist() == [[0, 0, 0], _ids("heart normal .")]
    assert batch["reference_mask"].tolist() == [[0, 0, 0], [1, 1, 1]]
    phrases = dataset[0]["key_phrases"]
    assert batch["key_phrase_ids"][0].tolist() == (_ids(phrases) + [0, 0, 0])[:3]

    long = collate.reports(["heart normal . lungs clear .", "clear"])[1]
    assert long.tolist() == [[1, 1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0, 0]]


def test_the_collator_keeps_the_truth_aside_for_image_only_batches(pngs):
    tokenizer = _word_tokenizer()
    manifest, studies = _studies(pngs)
    dataset = ImageOnlyDataset(image_only_items(studies, manifest), _shade_preprocess, max_images=1)
    batch = Collator(tokenizer, tokenizer, 16, 3)([dataset[0], dataset[1]])
    assert set(batch) == {"ids", "pixel_values", "image_mask", "findings"}
    assert batch["findings"] == ["heart normal .", "lungs clear ."] and batch["pixel_values"].shape == (2, 1, 3, 2, 2)


def test_a_batch_of_one_study_collates(pngs):
    tokenizer = _word_tokenizer()
    manifest, studies = _studies(pngs)
    dataset = TrainingDataset(studies, {s.id: s.findings for s in studies}, manifest, _shade_preprocess, 2, 3)
    batch = Collator(tokenizer, tokenizer, 16, 3)([dataset[1]])
    assert batch["ids"] == ["b"] and batch["report_ids"].tolist() == [_ids("lungs clear .") + [WORDS.index("</s>")]]
