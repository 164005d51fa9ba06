"""Tiny random base models (vision, text, LLM) for the demo and the tests.

No machine here reaches a model hub, yet the product is the real loading code.
So the demo and the tests build small, randomly initialised models from
``transformers`` configs of the same families as the real defaults (DINOv2 for
Rad-DINO, BERT for CXR-BERT, Llama for Vicuna), train small tokenizers on the
training reports, save everything with ``save_pretrained``, and then load them
back through exactly the ``from_pretrained`` path the real models take.

A random LLM knows no language, while the real method starts from Vicuna,
an instruction-tuned LLM that can already write a report from a list of
findings placed in its prompt. So that the demo's stage 1 means what it means
in the paper (a frozen LLM that can follow its context, taught to read the
image through the adapter), the tiny LLM is first trained on text alone, from
the training split only: the sequence it will see in training,
``prompt | <context> | instruction | report``, with the study's key phrases
written out as text where the adapter tokens will go, and the loss on the
report. No image ever reaches it here; reading the image is what stage 1 must
teach the adapter. The vision encoder stays random, with one change that a
pretrained encoder would not need (see ``_build_vision``).

Every file written here is a function of the seed and the manifest alone, byte
for byte, in any process. ``tokenizers``' WordPiece trainer is not: its
vocabulary depends on the process's hash ordering (691 or 693 tokens on the
same corpus from one run to the next, with or without
``TOKENIZERS_PARALLELISM``), which changed the demo's figures between two runs
of one machine. So the text encoder's vocabulary is built here, from sorted
counts (``wordpiece_vocabulary``); it only has to cover the corpus, since the
encoder on top of it is random anyway.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
import random
from typing import Iterable, Sequence

import torch

from s2d_align.config import PromptConfig
from s2d_align.data.manifest import read_manifest


@dataclass(frozen=True)
class TinySizes:
    image_size: int = 112
    patch_size: int = 14
    vision_hidden: int = 128
    vision_layers: int = 2
    text_hidden: int = 128
    text_layers: int = 2
    text_vocab: int = 1000
    llm_hidden: int = 256
    llm_layers: int = 2
    llm_heads: int = 4
    llm_vocab: int = 1500
    max_positions: int = 1024
    llm_pretrain_steps: int = 300
    llm_pretrain_batch: int = 32


def build_tiny_models(
    out: Path,
    manifest: Path,
    seed: int = 0,
    sizes: TinySizes = TinySizes(),
    prompt: str = PromptConfig.prompt,
    instruction: str = PromptConfig.instruction,
) -> dict[str, Path]:
    """Write ``out/vision``, ``out/text`` and ``out/llm`` (weights, configs, tokenizers, image processor).

    Tokenizers learn from the training split's reports, impressions and key
    phrases and from the recipe's ``prompt`` and ``instruction``.
    """
    studies = [s for s in read_manifest(manifest) if s.split == "train"]
    corpus = [s.findings for s in studies] + [s.impression for s in studies if s.impression]
    corpus += [k.text for s in studies for k in s.key_phrases] + [prompt, instruction]
    out = Path(out)
    paths = {"vision": out / "vision", "text": out / "text", "llm": out / "llm"}
    _build_vision(paths["vision"], sizes, seed)
    _build_text(paths["text"], corpus, sizes, seed + 1)
    rng = random.Random(seed)
    examples = []
    for study in studies:
        phrases = [k.text for k in study.key_phrases]
        rng.shuffle(phrases)  # adapter tokens carry no order; neither should the context
        examples.append((prompt, "; ".join(phrases), instruction, study.findings))
    _build_llm(paths["llm"], corpus, examples, sizes, seed + 2)
    return paths


def _build_vision(path: Path, sizes: TinySizes, seed: int) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(
        image_size=sizes.image_size,
        patch_size=sizes.patch_size,
        hidden_size=sizes.vision_hidden,
        num_hidden_layers=sizes.vision_layers,
        num_attention_heads=4,
        mlp_ratio=2,
    )
    model = Dinov2Model(config)
    # At the config's 0.02 scale the position embeddings vanish beside the patch
    # content, and after the final LayerNorm a random ViT no longer says where a
    # patch is. A pretrained encoder does; unit scale keeps position in the features.
    with torch.no_grad():
        model.embeddings.position_embeddings.normal_(0.0, 1.0)
    model.save_pretrained(path)
    BitImageProcessor(
        do_resize=True,
        size={"shortest_edge": sizes.image_size},
        do_center_crop=True,
        crop_size={"height": sizes.image_size, "width": sizes.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
        do_convert_rgb=True,
    ).save_pretrained(path)


def _build_text(path: Path, corpus: Iterable[str], sizes: TinySizes, seed: int) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [w for text in corpus for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]
    vocab = wordpiece_vocabulary(words, sizes.text_vocab, special)
    wordpiece = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    wordpiece.normalizer = normalizer
    wordpiece.pre_tokenizer = pre_tokenizer
    wordpiece.decoder = decoders.WordPiece()
    cls, sep = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece)
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=wordpiece.get_vocab_size(),
        hidden_size=sizes.text_hidden,
        num_hidden_layers=sizes.text_layers,
        num_attention_heads=4,
        intermediate_size=2 * sizes.text_hidden,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    BertModel(config).save_pretrained(path)


def wordpiece_vocabulary(words: Iterable[str], size: int, special: Sequence[str]) -> dict[str, int]:
    """A WordPiece vocabulary from sorted counts, identical in every process.

    Special tokens first, then every character seen, alone and as a ``##``
    continuation (so any word of the corpus can be spelt), then whole words by
    falling count, ties in alphabetical order, up to ``size`` entries.
    """
    counts = Counter(words)
    chars = sorted({c for word in counts for c in word})
    entries = list(dict.fromkeys([*special, *chars, *(f"##{c}" for c in chars)]))
    ranked = sorted((w for w in counts if w not in entries), key=lambda w: (-counts[w], w))
    entries += ranked[: max(0, size - len(entries))]
    return {token: index for index, token in enumerate(entries)}


def _build_llm(path: Path, corpus: Sequence[str], examples: Sequence[tuple[str, ...]], sizes: TinySizes, seed: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Metaspace()
    special = ["<pad>", "<s>", "</s>", "<unk>"]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=sizes.llm_vocab, special_tokens=special))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=sizes.llm_hidden,
        intermediate_size=2 * sizes.llm_hidden,
        num_hidden_layers=sizes.llm_layers,
        num_attention_heads=sizes.llm_heads,
        num_key_value_heads=sizes.llm_heads,
        max_position_embeddings=sizes.max_positions,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    _pretrain_language_model(model, tokenizer, examples, sizes, seed)
    model.save_pretrained(path)


def _pretrain_language_model(model, tokenizer, examples: Sequence[tuple[str, ...]], sizes: TinySizes, seed: int) -> None:
    """Text-only training on ``(prompt, context, instruction, report)``, loss on the report and EOS.

    The pieces are tokenised separately and joined, exactly as ``S2DAlign``
    joins its prefix and the report.
    """
    from tqdm.auto import tqdm

    if not sizes.llm_pretrain_steps or not examples:
        return

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    rows, starts = [], []
    for *context, report in examples:
        prefix = [tokenizer.bos_token_id] + [i for piece in context for i in ids(piece)]
        rows.append(prefix + ids(report) + [tokenizer.eos_token_id])
        starts.append(len(prefix))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=sizes.llm_pretrain_steps)
    model.train()
    bar = tqdm(range(sizes.llm_pretrain_steps), desc="pretraining the tiny LLM on report text", unit="step", leave=False)
    for _ in bar:
        picks = torch.randint(len(rows), (sizes.llm_pretrain_batch,), generator=generator).tolist()
        width = max(len(rows[i]) for i in picks)
        batch = torch.full((len(picks), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(picks), width), dtype=torch.long)
        labels = torch.full((len(picks), width), -100)
        for row, i in enumerate(picks):
            batch[row, : len(rows[i])] = torch.tensor(rows[i])
            mask[row, : len(rows[i])] = 1
            labels[row, starts[i] : len(rows[i])] = torch.tensor(rows[i][starts[i] :])
        loss = model(input_ids=batch, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
