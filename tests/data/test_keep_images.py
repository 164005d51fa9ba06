"""``keep_images``: the one rule, shared by the image check and the resized copies, for what is left of a study."""

from s2d_align.data.assembly import keep_images
from s2d_align.data.images import ImageError
from s2d_align.data.manifest import Study
from s2d_align.data.prepare_report import PrepareReport


def _study(record_id: str, images: tuple[str, ...], views: tuple[str, ...] = ()) -> Study:
    return Study(id=record_id, split="train", subject_id="p1", study_id=record_id, images=images, findings="Clear.",
                 views=views)


def test_dropped_images_take_their_views_and_a_study_left_with_none_is_skipped():
    studies = [
        _study("a", ("a0.jpg", "a1.jpg", "a2.jpg"), ("PA", "LATERAL", "AP")),
        _study("b", ("b0.jpg",), ("PA",)),
        _study("c", ("c0.jpg", "c1.jpg"), ("PA",)),  # views that do not pair with the images stay as they are
    ]
    broken = {"a1.jpg": ImageError("a1.jpg is cut short", "truncated"), "b0.jpg": ImageError("b0.jpg: gone", "missing_file"),
              "c0.jpg": ImageError("c0.jpg: gone", "missing_file")}
    calls = []

    def outcome(study, index):
        calls.append((study.id, index))
        path = study.images[index]
        return broken.get(path, f"copies/{path}")

    report = PrepareReport("test")
    kept = keep_images(studies, outcome, report)
    report.keep_all((s.id, s.split) for s in kept)

    assert calls == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("c", 0), ("c", 1)]
    assert [(s.id, s.images, s.views) for s in kept] == [
        ("a", ("copies/a0.jpg", "copies/a2.jpg"), ("PA", "AP")),
        ("c", ("copies/c1.jpg",), ("PA",)),
    ]
    data = report.to_json()
    assert data["skipped_ids"] == {"no_usable_images": ["b"]}
    assert data["details"]["no_usable_images"] == ["b: missing_file"]
    assert report.fixed_by_reason() == {"image_dropped:missing_file": 1, "image_dropped:truncated": 1}


def test_the_skip_names_the_callers_reason_when_given_one():
    report = PrepareReport("test")
    kept = keep_images([_study("a", ("a0.jpg",))], lambda s, i: ImageError("bad", "unreadable"), report,
                       why_none="no image could be resized")
    assert kept == []
    assert report.to_json()["details"]["no_usable_images"] == ["a: no image could be resized"]
