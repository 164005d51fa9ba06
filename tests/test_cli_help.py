"""The command line teaches: versions, defaults in every help, the line to paste, which scoring was used."""

import argparse
import dataclasses
import json

import pytest

from s2d_align import __version__, cli
from s2d_align.data.manifest import read_manifest, write_manifest
from s2d_align.evaluation.report import evaluate_file


def _parsers(parser, name="s2d-align"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    assert caught.value.code == 0 and capsys.readouterr().out == f"s2d-align {__version__}\n"


def test_every_flag_has_a_sentence_and_its_default_is_shown():
    for name, parser in _parsers(cli.build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"
            if action.option_strings and action.default not in (None, False, []):
                assert "default" in cli._Formatter(name)._get_help_string(action).lower(), (name, action.dest)
        assert "show this help message" in text
    generate = dict(_parsers(cli.build_parser()))["s2d-align generate"].format_help()
    assert "which split of the manifest (default: test)" in " ".join(generate.split())


def test_top_level_help_shows_the_way_in():
    text = cli.build_parser().format_help()
    assert "s2d-align demo" in text and "COMMAND --help" in text
    assert "s2d-align train --config iu_xray/s2d_align" in text


def test_tiny_models_line_names_every_model_the_manifest_and_its_images(tiny_world, tmp_path):
    paths = {"vision": tmp_path / "v", "text": tmp_path / "t", "llm": tmp_path / "l"}
    assert cli.tiny_model_overrides(paths, tiny_world.manifest) == [
        f"model.vision.name_or_path={tmp_path / 'v'}", f"model.text.name_or_path={tmp_path / 't'}",
        f"model.llm.name_or_path={tmp_path / 'l'}", f"data.manifest={tiny_world.manifest.resolve()}",
    ]
    images = tiny_world.manifest.parent / "images"
    studies = [dataclasses.replace(s, images=tuple(str(images / p.split("/")[-1]) for p in s.images))
               for s in read_manifest(tiny_world.manifest)]
    elsewhere = write_manifest(tmp_path / "m" / "manifest.jsonl", studies) and tmp_path / "m" / "manifest.jsonl"
    assert cli.tiny_model_overrides(paths, elsewhere)[-1] == f"data.image_root={images}"


def test_evaluate_follows_the_recipe_of_generated_predictions_and_says_so(tmp_path):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"id": "1", "reference": "No effusion.", "prediction": "No effusion."}) + "\n")
    clean, labeler, why = cli.scoring_defaults(predictions, None, None)
    assert (clean, labeler) == ("none", "rules") and "no p.jsonl.meta.json from generate" in why
    (tmp_path / "p.jsonl.meta.json").write_text(json.dumps({"evaluate": {"clean": "mimic_cxr", "labeler": "chexbert"}}))
    clean, labeler, why = cli.scoring_defaults(predictions, None, None)
    assert (clean, labeler) == ("mimic_cxr", "chexbert") and why.startswith("both from the checkpoint recipe in")
    assert cli.scoring_defaults(predictions, "iu_xray", None)[:2] == ("iu_xray", "chexbert")
    assert cli.scoring_defaults(predictions, "none", "rules") == ("none", "rules", "--clean and --labeler from the command line")


def test_evaluate_prints_the_cleaning_and_refuses_to_overwrite_its_input(tmp_path, capsys):
    predictions = tmp_path / "p.jsonl"
    line = json.dumps({"id": "1", "reference": "No effusion.", "prediction": "No effusion."}) + "\n"
    predictions.write_text(line)
    (tmp_path / "p.jsonl.meta.json").write_text(json.dumps({"evaluate": {"clean": "mimic_cxr", "labeler": "rules"}}))
    assert cli.main(["evaluate", "--predictions", str(predictions), "--output", str(predictions)]) == 2
    assert "is also the input --predictions" in capsys.readouterr().err
    assert predictions.read_text() == line
    with pytest.raises(ValueError, match="is also the input --predictions"):
        evaluate_file(predictions, predictions, metrics="bleu", resamples=0)
    assert cli.main(["evaluate", "--predictions", str(predictions), "--output", str(tmp_path / "m.json"),
                     "--metrics", "bleu", "--bootstrap", "0"]) == 0
    assert "cleaning: mimic_cxr; labeler: rules (both from the checkpoint recipe" in capsys.readouterr().err
    assert json.loads((tmp_path / "m.json").read_text())["cleaning"]["scheme"] == "mimic_cxr"
