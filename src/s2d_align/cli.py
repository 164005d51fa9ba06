"""The ``s2d-align`` command: each subcommand parses its flags and calls one plain function.

Subcommands talk through files: ``prepare`` writes a manifest, ``train``
writes checkpoints, ``generate`` writes predictions JSONL, ``evaluate`` reads
them. Set ``S2D_DEBUG=1`` to see the traceback behind an error message.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from s2d_align.data.images import MAX_PIXELS

DESCRIPTION = """\
Write the FINDINGS section of a chest X-ray report from the image alone
(S2D-Align: a vision encoder, a memory adapter and an LLM, trained in three
stages that add a reference report and key phrases as auxiliary context).

Try it end to end on a small synthetic dataset (no downloads, a few minutes
on a laptop CPU):

  s2d-align demo

On your own data, the steps talk through files:

  s2d-align prepare iu-xray --reports R --images I --out data/iu   # -> manifest.jsonl
  s2d-align train --config iu_xray/s2d_align --out runs/iu data.manifest=data/iu/manifest.jsonl data.image_root=I
  s2d-align generate --checkpoint runs/iu/checkpoints/s3 --manifest data/iu/manifest.jsonl --images I \\
      --output runs/iu/test.jsonl
  s2d-align evaluate --predictions runs/iu/test.jsonl --output runs/iu/test.metrics.json

Run `s2d-align COMMAND --help` for each command's flags and defaults.
"""


def _quiet_libraries() -> None:
    """Keep the terminal for our own progress bars: silence library chatter (entry point only)."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # we refuse such images ourselves


# --------------------------------------------------------------------------- prepare


def cmd_prepare_phantom(args: argparse.Namespace) -> int:
    from s2d_align.data.phantom import prepare_phantom

    manifest = prepare_phantom(Path(args.out), studies=args.studies, seed=args.seed, image_size=args.image_size)
    print(f"wrote {manifest}")
    return 0


def cmd_prepare_tiny_models(args: argparse.Namespace) -> int:
    from s2d_align.models.tiny import build_tiny_models

    paths = build_tiny_models(Path(args.out), manifest=Path(args.manifest), seed=args.seed)
    for role, path in paths.items():
        print(f"{role}: {path}")
    print("\nto train on your data with them, run (the demo recipe sizes the adapter for tiny models):")
    print("  s2d-align train --config demo --out runs/mine " + " ".join(tiny_model_overrides(paths, Path(args.manifest))))
    return 0


def tiny_model_overrides(paths: dict, manifest: Path) -> list[str]:
    """The ``key=value`` overrides that point a recipe at tiny models, at ``manifest`` and at its images."""
    from s2d_align.data.manifest import image_path, outside_roots, read_manifest

    roles = {"vision": "model.vision.name_or_path", "text": "model.text.name_or_path", "llm": "model.llm.name_or_path"}
    overrides = [f"{roles[role]}={Path(path).resolve()}" for role, path in paths.items() if role in roles]
    overrides.append(f"data.manifest={manifest.resolve()}")
    images = [image_path(manifest, p) for s in read_manifest(manifest) for p in s.images]
    if any(outside_roots(manifest, str(p)) for p in images):
        overrides.append(f"data.image_root={os.path.commonpath([str(p.parent) for p in images])}")
    return overrides


def _refiner(args: argparse.Namespace):
    from s2d_align.data.refiners import build_refiner

    cache = Path(args.refine_cache) if args.refine_cache else Path(args.out) / "cache" / "refinements.sqlite"
    return build_refiner(
        args.refiner, cache, model=args.refiner_model, url=args.refiner_url, pool_path=args.few_shot,
        k=args.few_shot_k, batch_size=args.refine_batch_size, concurrency=args.refine_concurrency,
        timeout=args.refine_timeout, max_retries=args.refine_retries, api_key_env=args.refiner_api_key_env,
        device=args.refiner_device, allow_insecure_url=args.allow_insecure_refiner_url,
    )


def _finish(manifest: Path, report) -> int:
    print(report.summary())
    print(f"wrote {manifest}")
    print(f"wrote {manifest.parent / 'prepare_report.json'}")
    return 0


def cmd_prepare_iu_xray(args: argparse.Namespace) -> int:
    from s2d_align.data.iu_xray import prepare_iu_xray

    manifest, report = prepare_iu_xray(
        reports=Path(args.reports), images=Path(args.images), out=Path(args.out),
        annotation=Path(args.annotation) if args.annotation else None, seed=args.seed,
        views_csv=Path(args.views_csv) if args.views_csv else None, reference=args.reference,
        vision_model=args.vision_model, radgraph=[Path(p) for p in args.radgraph], refiner=_refiner(args),
        check_images=args.check_images, max_pixels=args.max_pixels, workers=args.workers,
        embed_batch_size=args.embed_batch_size, embed_device=args.embed_device, image_size=args.image_size,
    )
    return _finish(manifest, report)


def cmd_prepare_mimic_cxr(args: argparse.Namespace) -> int:
    from s2d_align.data.mimic_cxr import prepare_mimic_cxr

    manifest, report = prepare_mimic_cxr(
        jpg_root=Path(args.jpg_root), reports=Path(args.reports), out=Path(args.out),
        radgraph=[Path(p) for p in args.radgraph], views=args.views, reference_fallback=args.reference_fallback,
        vision_model=args.vision_model, require_radgraph=args.require_radgraph, refiner=_refiner(args),
        check_images=args.check_images, max_pixels=args.max_pixels, workers=args.workers,
        store_radgraph=not args.no_store_radgraph, embed_batch_size=args.embed_batch_size,
        embed_device=args.embed_device, image_size=args.image_size,
    )
    return _finish(manifest, report)


def cmd_prepare_r2gen(args: argparse.Namespace) -> int:
    from s2d_align.data.r2gen import prepare_r2gen

    manifest, report = prepare_r2gen(
        annotation=Path(args.annotation), images=Path(args.images), out=Path(args.out), dataset=args.dataset,
        reference=args.reference, vision_model=args.vision_model, check_images=args.check_images,
        max_pixels=args.max_pixels, workers=args.workers, embed_batch_size=args.embed_batch_size,
        embed_device=args.embed_device, image_size=args.image_size,
    )
    return _finish(manifest, report)


def cmd_export_r2gen(args: argparse.Namespace) -> int:
    from s2d_align.data.manifest import read_manifest
    from s2d_align.data.r2gen import export_annotation

    manifest = Path(args.manifest)
    count, root = export_annotation(
        read_manifest(manifest), manifest, Path(args.out),
        image_root=Path(args.image_root) if args.image_root else None, per_image=args.per_image,
    )
    print(f"wrote {count} entries to {args.out}; image_path is relative to {root}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    from s2d_align.models.pretrained import export_model

    if not args.checkpoint or not args.model_out:
        raise ValueError("export needs --checkpoint RUN/checkpoints/STAGE and --out MODEL (or a format: export r2gen ...)")
    out = export_model(
        args.checkpoint, args.model_out, copy_base_models=args.copy_base_models, merge_lora=args.merge_lora,
        trust_remote_code=args.trust_remote_code,
    )
    print(f"wrote the model folder {out}")
    return 0


# --------------------------------------------------------------------------- train / generate / evaluate


def cmd_train(args: argparse.Namespace) -> int:
    from s2d_align.config import load_config
    from s2d_align.training.loop import train

    config = load_config(args.config, args.overrides)
    train(config, Path(args.out), trust_remote_code=args.trust_remote_code)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from s2d_align.config import load_config
    from s2d_align.training.plan import format_plan, plan

    config = load_config(args.config, args.overrides)
    result = plan(
        config,
        manifest=Path(args.manifest) if args.manifest else None,
        gpus=args.gpus,
        gpu_memory_gib=args.gpu_memory,
        mfu=args.mfu,
        peak_tflops=args.peak_tflops,
        train_samples=args.train_samples,
    )
    print(format_plan(result))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from s2d_align.inference.generation import generate_file

    count = generate_file(
        checkpoint=Path(args.checkpoint),
        manifest=Path(args.manifest),
        split=args.split,
        output=Path(args.output),
        overrides=args.overrides,
        images=Path(args.images) if args.images else None,
        allow_absolute_paths=args.allow_absolute_paths,
        trust_remote_code=args.trust_remote_code,
    )
    print(f"wrote {count} predictions to {args.output}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from s2d_align.inference.report import report_study

    settings = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        settings[key.strip()] = value.strip()
    result = report_study(
        args.model, args.images, device=args.device, settings=settings, output=args.output, heatmaps=args.heatmaps,
        trust_remote_code=args.trust_remote_code,
    )
    print(result["report"])
    return 0


def _labeler_options(args: argparse.Namespace) -> dict:
    return {
        "checkpoint": args.chexbert_checkpoint,
        "bert_dir": args.bert_dir,
        "device": args.device,
        "batch_size": args.batch_size,
    }


def cmd_evaluate(args: argparse.Namespace) -> int:
    from s2d_align.evaluation.report import caption, evaluate_file, format_table, output_paths

    clean, labeler, why = scoring_defaults(Path(args.predictions), args.clean, args.labeler)
    print(f"cleaning: {clean}; labeler: {labeler} ({why})", file=sys.stderr)
    metrics = evaluate_file(
        Path(args.predictions),
        Path(args.output),
        clean=clean,
        metrics=args.metrics,
        labeler=labeler,
        labeler_options=_labeler_options(args),
        radgraph_annotations=args.radgraph_annotations,
        radgraph_reference=args.radgraph_reference,
        radgraph_prediction=args.radgraph_prediction,
        resamples=args.bootstrap,
        seed=args.seed,
        confidence=args.confidence,
        metric_models=_metric_models(args),
        device=args.metric_device,
    )
    print(format_table({"test": metrics}))
    print(caption(metrics))
    for name, reason in metrics["not_run"].items():
        print(f"not run: {name}: {reason}", file=sys.stderr)
    paths = output_paths(Path(args.output))
    print(f"wrote {paths['json']}, {paths['markdown']}, {paths['samples']}", file=sys.stderr)
    return 0


def scoring_defaults(predictions: Path, clean: str | None, labeler: str | None) -> tuple[str, str, str]:
    """The cleaning and labeler ``evaluate`` uses, and why.

    Predictions written by ``generate`` carry a ``P.jsonl.meta.json`` sidecar
    with the checkpoint's recipe: its ``evaluate.clean`` and ``evaluate.labeler``
    are then the defaults, so that a run is scored as its recipe (and the demo)
    scores it. Predictions from anywhere else are scored as given (``none``):
    the tool cannot know which cleaning their references already had.
    """
    import json

    from s2d_align.inference.generation import sidecar_path

    sidecar = sidecar_path(predictions)
    recipe = {}
    if sidecar.is_file() and (clean is None or labeler is None):
        recipe = json.loads(sidecar.read_text(encoding="utf-8")).get("evaluate", {})
    given = " and ".join(f for f, v in (("--clean", clean), ("--labeler", labeler)) if v)
    if clean and labeler:
        why = f"{given} from the command line"
    elif recipe:
        why = (f"{given} from the command line, the rest" if given else "both") + f" from the checkpoint recipe in {sidecar}"
    else:
        why = ((f"{given} from the command line; " if given else "")
               + f"no {sidecar.name} from generate, so defaults: the text is scored as given")
    return clean or recipe.get("clean", "none"), labeler or recipe.get("labeler", "rules"), why


def _metric_models(args: argparse.Namespace) -> dict[str, str]:
    from s2d_align.evaluation.model_metrics import parse_metric_models

    return parse_metric_models(args.metric_model)


def cmd_label(args: argparse.Namespace) -> int:
    from s2d_align.evaluation.labelers import build_labeler, label_file

    labeler = build_labeler(args.labeler, **_labeler_options(args))
    count = label_file(Path(args.input), Path(args.output), labeler)
    print(f"labeled {count} reports with {labeler.name} {labeler.version} -> {args.output}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from s2d_align import atomic
    from s2d_align.evaluation.comparison import compare_files, format_comparison

    if args.output:
        atomic.refuse_overwrite(args.output, {"A": args.a, "B": args.b})

    result = compare_files(
        Path(args.a),
        Path(args.b),
        clean=args.clean,
        metrics=args.metrics,
        labeler=args.labeler,
        labeler_options=_labeler_options(args),
        radgraph_a=args.radgraph_a,
        radgraph_b=args.radgraph_b,
        test=args.test,
        metric_models=_metric_models(args),
        device=args.metric_device,
        resamples=args.resamples,
        seed=args.seed,
        confidence=args.confidence,
    )
    print(format_comparison(result))
    if args.output:
        atomic.write_json(args.output, result)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from s2d_align.demo import run_demo
    from s2d_align.reproducibility import reexec_pinned

    if args.pin_cpu and args.command_line is not None:
        reexec_pinned(args.command_line)
    run_demo(Path(args.out), studies=args.studies, config=args.config, overrides=args.overrides)
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from s2d_align.experiments.grid import GridSettings, run_grid

    settings = GridSettings(grid=args.grid, seeds=args.seeds, studies=args.studies, epoch_scale=args.epoch_scale,
                            overrides=tuple(args.overrides), cells=tuple(c for c in args.cells.split(",") if c))
    run_grid(Path(args.out), settings)
    return 0


def cmd_reader_study_make(args: argparse.Namespace) -> int:
    from s2d_align.experiments.reader_study import make_study

    key = make_study([Path(p) for p in args.predictions], Path(args.manifest), Path(args.out), n=args.n,
                     seed=args.seed, include_reference=args.include_reference)
    print(f"wrote {Path(args.out) / 'index.html'} ({len(key['items'])} reports of {len(key['cases'])} studies); "
          f"the key stays in {Path(args.out) / 'key.json'}: do not send it to the readers")
    return 0


def cmd_reader_study_score(args: argparse.Namespace) -> int:
    from s2d_align import atomic
    from s2d_align.experiments.reader_study import format_scores, score_study

    result = score_study(Path(args.study), [Path(p) for p in args.ratings])
    print(format_scores(result))
    if args.json:
        atomic.write_json(args.json, result)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from s2d_align.serving.server import serve

    serve(
        Path(args.model), host=args.host, port=args.port, device=args.device, api_key=args.api_key,
        save_uploads=Path(args.save_uploads) if args.save_uploads else None, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, max_upload_mb=args.max_upload_mb,
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from s2d_align.inspection import write_inspection

    count = write_inspection(Path(args.predictions), Path(args.manifest), Path(args.out),
                             model=Path(args.model) if args.model else None, device=args.device,
                             image_size=args.image_size)
    print(f"wrote {count} studies to {args.out}")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from s2d_align import __version__

    parser = argparse.ArgumentParser(prog="s2d-align", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="the whole method on the phantom dataset, start to finish")
    demo.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    demo.add_argument("--studies", type=int, default=None, help="phantom studies (default: the recipe's)")
    demo.add_argument("--config", default="demo", help="recipe (default: the shipped configs/demo.yaml)")
    demo.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    demo.add_argument("--no-pin-cpu", dest="pin_cpu", action="store_false",
                      help="keep this machine's fastest CPU kernels and threads (figures may differ across processors)")
    demo.set_defaults(func=cmd_demo)

    experiment = commands.add_parser("experiment", help="the paper's ablation tables on the phantom, over seeds")
    experiment.add_argument("--grid", choices=("table3", "table4", "all"), default="all",
                            help="which of the paper's tables to run: the curricula (3), the connectors (4) or both")
    experiment.add_argument("--seeds", type=int, default=3, help="training seeds per cell (default 3)")
    experiment.add_argument("--out", required=True, help="grid folder (rerun to resume)")
    experiment.add_argument("--studies", type=int, default=1000, help="phantom studies shared by all cells (default 1000: the 3-seed grid of docs/experiments.md)")
    experiment.add_argument("--epoch-scale", type=float, default=0.4,
                            help="each stage trains the recipe's epochs times this (default 0.4)")
    experiment.add_argument("--cells", default="", help="comma-separated subset of the grid's cells (default: all)")
    experiment.add_argument("overrides", nargs="*", help="overrides for every cell's recipe, key=value")
    experiment.set_defaults(func=cmd_experiment)

    reader = commands.add_parser("reader-study", help="a blinded reader study page (paper's Table 5) and its scores")
    reader_commands = reader.add_subparsers(dest="reader_command", required=True)
    make = reader_commands.add_parser("make", help="write STUDY/index.html (self-contained) and STUDY/key.json")
    make.add_argument("--predictions", nargs="+", required=True, help="predictions JSONL, one per system")
    make.add_argument("--include-reference", action="store_true", help="also rate the radiologists' own reports")
    make.add_argument("--manifest", required=True, help="the manifest the predictions' ids come from (for images)")
    make.add_argument("--n", type=int, default=50, help="studies to rate (default 50)")
    make.add_argument("--seed", type=int, default=0, help="draw and order of the reports (default 0)")
    make.add_argument("--out", required=True, help="study folder")
    make.set_defaults(func=cmd_reader_study_make)
    score = reader_commands.add_parser("score", help="unblind ratings CSVs: per-system means and rater agreement")
    score.add_argument("study", help="the study folder (holds key.json)")
    score.add_argument("ratings", nargs="+", help="ratings CSV files exported from the page")
    score.add_argument("--json", help="also write the scores as JSON here")
    score.set_defaults(func=cmd_reader_study_score)

    prepare = commands.add_parser("prepare", help="build a dataset manifest").add_subparsers(
        dest="source", required=True, metavar="SOURCE"
    )
    phantom = prepare.add_parser("phantom", help="the procedurally drawn phantom dataset")
    phantom.add_argument("--out", required=True, help="folder for manifest.jsonl, images/ and prepare_report.json")
    phantom.add_argument("--studies", type=int, default=600, help="number of phantom studies to draw")
    phantom.add_argument("--seed", type=int, default=0, help="seed of the patients, findings and split")
    phantom.add_argument("--image-size", type=int, default=128, help="side of the square radiographs, in pixels")
    phantom.set_defaults(func=cmd_prepare_phantom)

    tiny = prepare.add_parser("tiny-models", help="tiny random base models (vision, text, LLM) for demos and tests")
    tiny.add_argument("--manifest", required=True, help="manifest whose reports train the tiny tokenizers")
    tiny.add_argument("--out", required=True, help="folder for the vision/, text/ and llm/ model folders")
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights and tokenizers")
    tiny.set_defaults(func=cmd_prepare_tiny_models)

    iu = prepare.add_parser("iu-xray", help="IU X-Ray (Open-i) reports and PNGs")
    iu.add_argument("--reports", required=True, help="ecgen-radiology/ folder of report XMLs, or NLMCXR_reports.tgz")
    iu.add_argument("--images", required=True, help="folder holding the Open-i PNGs (searched recursively)")
    iu.add_argument("--out", required=True, help="folder for manifest.jsonl and prepare_report.json")
    iu.add_argument("--annotation", help="R2Gen annotation.json: use its ids and split")
    iu.add_argument("--seed", type=int, default=0, help="seed of the hashed, about 70/10/20 split by patient without --annotation")
    iu.add_argument("--views-csv", help="CSV of image -> view (e.g. Kaggle's indiana_projections.csv)")
    iu.add_argument("--reference", default="retrieval", choices=["retrieval", "none"],
                    help="stage-2 reference: nearest training study by image embedding (default), or none")
    _add_common_prepare_options(iu, check_default="full")
    iu.set_defaults(func=cmd_prepare_iu_xray)

    mimic = prepare.add_parser("mimic-cxr", help="MIMIC-CXR-JPG images and MIMIC-CXR reports")
    mimic.add_argument("--jpg-root", required=True, help="MIMIC-CXR-JPG root (split/metadata CSVs and files/)")
    mimic.add_argument("--reports", required=True, help="folder whose files/ holds pXX/pSUBJECT/sSTUDY.txt")
    mimic.add_argument("--out", required=True, help="folder for manifest.jsonl and prepare_report.json")
    mimic.add_argument("--views", default="all", choices=["all", "frontal"], help="keep all views or the frontal ones only (PA, AP, AP AXIAL, decubitus PA/AP)")
    mimic.add_argument("--reference-fallback", default="none", choices=["none", "retrieval"],
                       help="reference of a study without an earlier one: none (default) or retrieval")
    mimic.add_argument("--require-radgraph", default="all", choices=["all", "train", "none"],
                       help="with --radgraph, exclude studies lacking an annotation in all splits (the paper), "
                            "in train only, or nowhere")
    mimic.add_argument("--no-store-radgraph", action="store_true",
                       help="leave the manifest's radgraph field empty (smaller manifest)")
    _add_common_prepare_options(mimic, check_default="full")
    mimic.set_defaults(func=cmd_prepare_mimic_cxr)

    r2gen = prepare.add_parser("r2gen", help="import an R2Gen annotation.json (IU X-Ray or MIMIC-CXR)")
    r2gen.add_argument("--annotation", required=True, help="R2Gen's annotation.json: its ids, split and reports")
    r2gen.add_argument("--images", required=True, help="the folder R2Gen's image_path entries are relative to")
    r2gen.add_argument("--out", required=True, help="folder for manifest.jsonl and prepare_report.json")
    r2gen.add_argument("--dataset", default="auto", choices=["auto", "iu_xray", "mimic_cxr"],
                       help="which dataset the file describes (default: mimic_cxr if entries have study_id)")
    r2gen.add_argument("--reference", default="none", choices=["none", "retrieval"],
                       help="stage-2 reference: none (default) or the nearest training study by image embedding")
    r2gen.add_argument("--vision-model", default="microsoft/rad-dino",
                       help="frozen image encoder for retrieval (hub id or local folder)")
    r2gen.add_argument("--embed-batch-size", type=int, default=16, help="images per embedding batch for retrieval")
    r2gen.add_argument("--embed-device", default="cpu", help="torch device for retrieval embeddings (e.g. cuda)")
    r2gen.add_argument("--check-images", default="header", choices=["none", "header", "full"],
                       help="how hard to vet each image (default: header)")
    r2gen.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                       help=f"refuse images larger than this (default: {MAX_PIXELS:,})")
    r2gen.add_argument("--workers", type=int, default=None,
                       help="threads for reading files (default: min(32, 4 x cores))")
    r2gen.add_argument("--image-size", type=int, default=None, metavar="N", help=IMAGE_SIZE_HELP)
    r2gen.set_defaults(func=cmd_prepare_r2gen)

    export = commands.add_parser(
        "export",
        help="write a self-contained model folder from a stage checkpoint, or a manifest in another format",
        description="s2d-align export --checkpoint RUN/checkpoints/s3 --out MODEL writes a model folder; "
        "s2d-align export r2gen ... writes a manifest as R2Gen's annotation.json.",
    )
    export.add_argument("--checkpoint", help="a finished stage checkpoint folder (RUN/checkpoints/s3)")
    export.add_argument("--out", dest="model_out", help="the model folder to write (new or empty)")
    export.add_argument("--copy-base-models", action="store_true", help="copy the vision encoder and LLM into it")
    export.add_argument("--merge-lora", action="store_true", help="also write the LLM with LoRA merged (merged_llm/)")
    export.add_argument("--trust-remote-code", action="store_true", help="allow base models that ship their own code")
    export.set_defaults(func=cmd_export_model)
    formats = export.add_subparsers(dest="format", required=False, metavar="FORMAT")
    export_r2gen = formats.add_parser("r2gen", help="R2Gen annotation.json")
    export_r2gen.add_argument("--manifest", required=True, help="manifest.jsonl to export")
    export_r2gen.add_argument("--out", required=True, help="annotation.json to write")
    export_r2gen.add_argument("--image-root", help="make image paths relative to this folder (default: their common folder)")
    export_r2gen.add_argument("--per-image", action="store_true", help="one entry per image, as R2Gen's MIMIC-CXR file")
    export_r2gen.set_defaults(func=cmd_export_r2gen)

    train = commands.add_parser("train", help="run the training curriculum of a recipe")
    train.add_argument("--config", required=True, help="recipe YAML (or a shipped name such as demo)")
    train.add_argument("--out", required=True, help="run folder; an interrupted run there is resumed")
    train.add_argument("overrides", nargs="*", help="key=value, e.g. train.stages.s1.epochs=2")
    _add_remote_code_flag(train)
    train.set_defaults(func=cmd_train)

    plan = commands.add_parser("plan", help="per-stage parameters, FLOPs, memory and time of a recipe; no weights loaded")
    plan.add_argument("--config", required=True, help="recipe YAML (or a shipped name such as mimic_cxr/s2d_align)")
    plan.add_argument("--manifest", help="lengths from this manifest's train split (default: the recipe's caps)")
    plan.add_argument("--gpus", type=int, default=1, help="data-parallel devices (default: 1)")
    plan.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per device (default: 80)")
    plan.add_argument("--mfu", type=float, default=0.4, help="model-FLOPs utilisation for the time estimate (default: 0.4)")
    plan.add_argument("--peak-tflops", type=float, default=989.0,
                      help="peak bf16 TFLOP/s per device (default: 989, H100 SXM dense; A100: 312)")
    plan.add_argument("--train-samples", type=int, help="training samples per epoch when no manifest is given")
    plan.add_argument("overrides", nargs="*", help="key=value, e.g. model.llm.name_or_path=/models/vicuna")
    plan.set_defaults(func=cmd_plan)

    generate = commands.add_parser("generate", help="write reports for a split, from the images alone")
    generate.add_argument("--checkpoint", required=True, help="a stage checkpoint folder")
    generate.add_argument("--manifest", required=True, help="manifest.jsonl whose studies to write reports for")
    generate.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split of the manifest")
    generate.add_argument("--output", required=True, help="predictions JSONL")
    generate.add_argument("--images", help="folder the manifest's image paths may lie in, besides the manifest's own "
                          "folder (e.g. the --images given to prepare)")
    generate.add_argument("--allow-absolute-paths", action="store_true",
                          help="accept image paths anywhere on this machine (only for a manifest you trust)")
    generate.add_argument("overrides", nargs="*",
                          help="generation settings, key=value or generate.key=value (e.g. num_beams=1)")
    _add_remote_code_flag(generate)
    generate.set_defaults(func=cmd_generate)

    report = commands.add_parser("report", help="the report of one study, from one or more images (a model folder)")
    report.add_argument("--model", required=True, help="a model folder (s2d-align export) or a stage checkpoint folder")
    report.add_argument("images", nargs="+", metavar="IMAGE", help="the study's views: PNG, JPEG or DICOM")
    report.add_argument("--output", help='also write {"report", "labels", "model", "settings"} as JSON')
    report.add_argument("--heatmaps", metavar="DIR", help="write each sentence's grounding map as a PNG overlay here")
    report.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    report.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a generation setting, e.g. --set num_beams=1 (repeatable)")
    report.add_argument("--trust-remote-code", action="store_true", help="allow base models that ship their own code")
    report.set_defaults(func=cmd_report)

    evaluate = commands.add_parser("evaluate", help="score predictions JSONL (NLG, clinical efficacy, RadGraph F1)")
    evaluate.add_argument("--predictions", required=True, help='JSONL, one {"id", "reference", "prediction"} per line')
    evaluate.add_argument("--output", required=True, help="metrics JSON; the .md table and .samples.csv go beside it")
    _add_scoring_flags(evaluate, default_metrics=None, recipe_defaults=True)
    evaluate.add_argument("--radgraph-annotations", help="JSON keyed by id: {reference: RadGraph, prediction: RadGraph}")
    evaluate.add_argument("--radgraph-reference", help="RadGraph JSON of the references, keyed by id")
    evaluate.add_argument("--radgraph-prediction", help="RadGraph JSON of the predictions, keyed by id")
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals (0: none)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    evaluate.add_argument("--confidence", type=float, default=0.95, help="level of the bootstrap intervals")
    evaluate.set_defaults(func=cmd_evaluate)

    label = commands.add_parser("label", help="CheXpert labels (14 observations) for report texts")
    label.add_argument("--input", required=True, help='JSONL, one {"id", "text"} per line')
    label.add_argument("--output", required=True, help='JSONL, one {"id", "labels"} per line')
    _add_labeler_flags(label)
    label.set_defaults(func=cmd_label)

    compare = commands.add_parser("compare", help="paired significance test between two systems on the same ids")
    compare.add_argument("a", help="predictions JSONL of system A")
    compare.add_argument("b", help="predictions JSONL of system B (same ids and references)")
    _add_scoring_flags(compare, default_metrics=None, default_text="bleu,rouge_l,cider,ce,radgraph; RadGraph F1 only "
                       "from --radgraph-a/-b")  # METEOR: no per-report statistics
    compare.add_argument("--radgraph-a", help='RadGraph annotations for system A: {id: {"reference": ..., "prediction": ...}}')
    compare.add_argument("--radgraph-b", help="the same for system B")
    compare.add_argument("--test", default="bootstrap", choices=["bootstrap", "permutation"],
                         help="paired bootstrap or approximate randomisation")
    compare.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples / randomisation rounds")
    compare.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    compare.add_argument("--confidence", type=float, default=0.95, help="level of the interval of the difference")
    compare.add_argument("--output", help="also write the result as JSON")
    compare.set_defaults(func=cmd_compare)

    serve = commands.add_parser("serve", help="web page and REST API for a trained model (needs the 'serve' extra)")
    serve.add_argument("--model", required=True, help="model folder (s2d-align export) or stage checkpoint folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    serve.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    serve.add_argument("--api-key", default=os.environ.get("S2D_API_KEY"),
                       help="require this key on the REST API (default: $S2D_API_KEY; none: open)")
    serve.add_argument("--save-uploads", help="keep every upload in this folder (default: nothing is written)")
    serve.add_argument("--max-batch", type=int, default=8, help="studies generated together (default: 8)")
    serve.add_argument("--max-wait-ms", type=float, default=10.0,
                       help="how long a batch waits for more requests (default: 10 ms)")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (default: 20 MB)")
    serve.set_defaults(func=cmd_serve)

    inspect = commands.add_parser("inspect", help="one self-contained HTML page of a test set's predictions")
    inspect.add_argument("--predictions", required=True, help='predictions JSONL ({"id", "reference", "prediction"})')
    inspect.add_argument("--manifest", required=True, help="the manifest the predictions were generated from")
    inspect.add_argument("--out", required=True, help="the HTML file to write")
    inspect.add_argument("--model", help="also show grounding maps of this model (folder or stage checkpoint)")
    inspect.add_argument("--device", default="auto", help="device for --model (default: cuda when available)")
    inspect.add_argument("--image-size", type=int, default=256, help="longest side of embedded images (default: 256)")
    inspect.set_defaults(func=cmd_inspect)
    _teach(parser)
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows every flag's default (unless its sentence already names it) and keeps examples' layout."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS, []) and action.option_strings
        if shown and "default" not in text.lower() and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _teach(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command prints its help with :class:`_Formatter`."""
    parser.formatter_class = _Formatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _teach(sub)


def _add_labeler_flags(parser: argparse.ArgumentParser, recipe_defaults: bool = False) -> None:
    from s2d_align.evaluation.labelers import LABELERS

    if recipe_defaults:
        parser.add_argument("--labeler", default=None, choices=LABELERS,
                            help="CheXpert labeler for clinical efficacy (default: the checkpoint recipe's when the "
                                 "predictions have a generate sidecar, else rules)")
    else:
        parser.add_argument("--labeler", default="rules", choices=LABELERS,
                            help="CheXpert labeler for clinical efficacy: rule-based or the CheXbert model")
    parser.add_argument("--chexbert-checkpoint", help="the published chexbert.pth (for --labeler chexbert)")
    parser.add_argument("--bert-dir", help="local bert-base-uncased folder: config.json and tokenizer (for chexbert)")
    parser.add_argument("--device", default="cpu", help="torch device for chexbert (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--batch-size", type=int, default=32, help="chexbert batch size")


def _add_scoring_flags(parser: argparse.ArgumentParser, default_metrics: str | None, recipe_defaults: bool = False,
                       default_text: str = "bleu..radgraph, all that can run") -> None:
    from s2d_align.evaluation.cleaning import CLEANERS

    if recipe_defaults:
        parser.add_argument("--clean", default=None, choices=list(CLEANERS),
                            help="cleaning applied to both sides before scoring (default: the checkpoint recipe's "
                                 "when the predictions have a generate sidecar P.jsonl.meta.json, else none)")
    else:
        parser.add_argument("--clean", default="none", choices=list(CLEANERS),
                            help="cleaning applied to both sides before scoring (default: none, text as given)")
    parser.add_argument("--metrics", default=default_metrics,
                        help="comma-separated subset of bleu,rouge_l,cider,meteor,ce,radgraph and, with the "
                             "'metrics' extra, bertscore,semb,radcliq,ratescore,green; radgraph named here without "
                             "annotations runs the RadGraph model (the extra) "
                             f"(default: {default_metrics or default_text})")
    parser.add_argument("--metric-model", action="append", default=[], metavar="NAME=ID_OR_PATH",
                        help="model of a model metric: a hub id or a local folder (bertscore=distilroberta-base, "
                             "semb=DIR with config.json, tokenizer, chexbert.pth; radgraph=radgraph-xl|radgraph|DIR; "
                             "radcliq=DIR, ratescore=DIR, green=ID|DIR; see docs/evaluation.md); repeatable")
    parser.add_argument("--metric-device", default=None,
                        help="torch device of the model metrics (default: cuda when present, else cpu)")
    _add_labeler_flags(parser, recipe_defaults)


IMAGE_SIZE_HELP = ("also write each image as a grayscale PNG with its shorter side at N pixels (OUT/images_N/), "
                   "and name those in the manifest: training decodes far smaller files. N = the vision encoder's "
                   "input (518 for Rad-DINO) gives the model exactly the same pixels; see docs/data.md")


def _add_common_prepare_options(parser: argparse.ArgumentParser, check_default: str) -> None:
    """Options of the IU X-Ray and MIMIC-CXR builders: RadGraph and key phrases, retrieval, image checks."""
    parser.add_argument("--radgraph", nargs="*", default=[], metavar="F.json", help="RadGraph JSON file(s)")
    parser.add_argument("--vision-model", default="microsoft/rad-dino",
                        help="frozen image encoder for retrieval (hub id or local folder)")
    parser.add_argument("--embed-batch-size", type=int, default=16, help="images per embedding batch for retrieval")
    parser.add_argument("--embed-device", default="cpu", help="torch device for retrieval embeddings (e.g. cuda)")
    parser.add_argument("--check-images", default=check_default, choices=["none", "header", "full"],
                        help=f"how hard to vet each image (default: {check_default})")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help=f"refuse images larger than this (default: {MAX_PIXELS:,})")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads for reading files (default: min(32, 4 x cores))")
    parser.add_argument("--image-size", type=int, default=None, metavar="N", help=IMAGE_SIZE_HELP)
    group = parser.add_argument_group("key-phrase refinement (paper, appendix A)")
    group.add_argument("--refiner", default="none", choices=["none", "hf", "openai"],
                       help="rewrite composed key phrases with an LLM: none, a local HF model, or an OpenAI-compatible server")
    group.add_argument("--refiner-model", help="hf: local folder or hub id; openai: the served model name")
    group.add_argument("--refiner-url", help="openai: base URL of an OpenAI-compatible server, e.g. http://localhost:8000/v1; "
                       "the API key goes only to https or localhost URLs")
    group.add_argument("--refiner-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    group.add_argument("--allow-insecure-refiner-url", action="store_true",
                       help="send the API key to a plain-http URL other than localhost (it travels unencrypted)")
    group.add_argument("--refiner-device", default="cpu", help="hf: torch device")
    group.add_argument("--few-shot", help="few-shot pool (JSON/JSONL of {input, output}); default: the shipped example")
    group.add_argument("--few-shot-k", type=int, default=4, help="examples per prompt")
    group.add_argument("--refine-batch-size", type=int, default=8, help="hf: prompts per generate call")
    group.add_argument("--refine-concurrency", type=int, default=8, help="openai: requests in flight")
    group.add_argument("--refine-timeout", type=float, default=60.0, help="openai: seconds per request")
    group.add_argument("--refine-retries", type=int, default=5, help="openai: retries per request")
    group.add_argument("--refine-cache", help="SQLite cache of refinements (default: OUT/cache/refinements.sqlite)")


def _add_remote_code_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let base models run the Python code their folders ship (off by default; "
                             "no recipe or checkpoint file can turn it on)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = sys.argv[1:] if argv is None else None  # a demo may start itself again with its CPU pinned
    _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        if os.environ.get("S2D_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
