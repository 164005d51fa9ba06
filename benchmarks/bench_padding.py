"""Share of the LLM's tokens that are padding, with and without length-grouped batches.

Every training sequence is prompt + adapter tokens (n_m per modality: 1 in S1,
2 in S2, 3 in S3) + instruction + report; a batch is padded to its longest
report. For each stage this prints the padding share over three epochs of
batches, shuffled at random (``train.group_by_length=false``) and length-grouped
(the default), on

* the phantom (``s2d-align demo``'s data and its tiny LLM tokenizer, the demo
  recipe's batch size, n_m and report cap);
* the Open-i FINDINGS shipped in the ``torchxrayvision==1.5.7`` wheel (read as
  ``benchmarks/openi_agreement.py`` does), with the IU X-ray recipe's batch
  size, n_m and report cap, tokenised by the same tiny tokenizer (the real
  Vicuna tokenizer cannot be downloaded here; the tiny BPE splits unseen words
  finer, so its lengths spread wider than Vicuna's would).

    PYTHONPATH=src python benchmarks/bench_padding.py --work /tmp/bench-padding
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from openi_agreement import ARCHIVE, default_cache, fetch_wheel  # noqa: E402

from s2d_align.config import load_config  # noqa: E402
from s2d_align.training.sampler import LengthGroupedSampler, report_lengths  # noqa: E402


def openi_findings(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        payload = archive.read(ARCHIVE)
    texts = []
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.name.endswith(".xml"):
                root = ET.parse(tar.extractfile(member)).getroot()
                sections = {a.get("Label"): (a.text or "").strip() for a in root.iter("AbstractText")}
                if sections.get("FINDINGS"):
                    texts.append(sections["FINDINGS"])
    return texts


def padding_share(order: list[int], lengths: list[int], batch: int, prefix: int) -> float:
    real = padded = 0
    for start in range(0, len(order), batch):
        rows = [lengths[i] for i in order[start : start + batch]]
        real += sum(prefix + r for r in rows)
        padded += len(rows) * (prefix + max(rows))
    return 1 - real / padded


def shares(lengths: list[int], batch: int, prefix: int, seed: int, epochs: int = 3) -> tuple[float, float]:
    grouped = LengthGroupedSampler(lengths, batch, seed=seed)
    before = after = 0.0
    for epoch in range(epochs):
        generator = torch.Generator()
        generator.manual_seed(seed * 100_003 + epoch)
        before += padding_share(torch.randperm(len(lengths), generator=generator).tolist(), lengths, batch, prefix)
        grouped.set_epoch(epoch)
        after += padding_share(list(grouped), lengths, batch, prefix)
    return before / epochs, after / epochs


def table(name: str, texts: list[str], recipe: str, tokenizer) -> None:
    config = load_config(recipe, [])
    lengths = report_lengths(tokenizer, texts, config.data.max_report_tokens)
    prompt = len(tokenizer(config.model.prompt.prompt, add_special_tokens=False).input_ids)
    instruction = len(tokenizer(config.model.prompt.instruction, add_special_tokens=False).input_ids)
    n_m, batch = config.model.connector.num_memory, config.train.batch_size
    lengths_sorted = sorted(lengths)
    print(f"\n{name}: {len(texts)} reports, recipe {recipe} (batch {batch}, n_m {n_m}, report cap "
          f"{config.data.max_report_tokens}); report tokens p50 {lengths_sorted[len(lengths) // 2]}, "
          f"max {lengths_sorted[-1]}")
    print(f"{'stage':<6} {'prefix':>6} {'random':>8} {'grouped':>8}")
    for stage, modalities in (("S1", 1), ("S2", 2), ("S3", 3)):
        prefix = prompt + modalities * n_m + instruction
        before, after = shares(lengths, batch, prefix, config.train.seed)
        print(f"{stage:<6} {prefix:>6} {before:>7.1%} {after:>8.1%}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-padding"))
    parser.add_argument("--studies", type=int, default=3000, help="phantom studies (the demo draws 3000)")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from s2d_align.data.manifest import read_manifest
    from s2d_align.data.phantom import prepare_phantom
    from s2d_align.models.tiny import TinySizes, build_tiny_models

    manifest = args.work / "manifest.jsonl"
    if not manifest.is_file():
        prepare_phantom(args.work, studies=args.studies, seed=0, image_size=64)
    base = args.work / "base_models"
    if not (base / "llm" / "config.json").is_file():
        demo = load_config("demo", [])
        build_tiny_models(base, manifest, 0, TinySizes(llm_pretrain_steps=0),
                          prompt=demo.model.prompt.prompt, instruction=demo.model.prompt.instruction)
    tokenizer = AutoTokenizer.from_pretrained(base / "llm")
    phantom = [s.findings for s in read_manifest(manifest) if s.split == "train"]
    table("phantom (train split)", phantom, "demo", tokenizer)
    table("Open-i FINDINGS", openi_findings(fetch_wheel(default_cache())), "iu_xray/s2d_align", tokenizer)


if __name__ == "__main__":
    main()
