"""The real server (subprocess on 127.0.0.1) with a real tiny trained model: 16 simultaneous uploads."""

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image


def _post(url, path, **params):
    with path.open("rb") as handle:
        return httpx.post(url + "/v1/reports", params=params, timeout=300,
                          files=[("images", (path.name, handle.read(), "image/png"))])


def _served_map(answer) -> np.ndarray:
    url = answer.json()["heatmaps"][0]["png"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))), dtype=int)


def test_sixteen_simultaneous_uploads_equal_their_one_by_one_answers_and_are_faster(live_server, real_generator,
                                                                                  phantom_images):
    from s2d_align.inference.grounding import overlay
    from s2d_align.inference.images import read_image

    one_by_one = [real_generator(path, heatmaps=True) for path in phantom_images]
    views = [read_image(path) for path in phantom_images]
    expected_maps = [np.asarray(overlay(v, r.heatmaps[0].map), dtype=int) for v, r in zip(views, one_by_one)]
    # A tiny model may write the same text for every image, but its maps differ: a swapped answer would show.
    for i in range(len(views)):
        swapped = np.asarray(overlay(views[i], one_by_one[(i + 1) % len(views)].heatmaps[0].map), dtype=int)
        assert np.abs(swapped - expected_maps[i]).max() > 2

    start = time.perf_counter()
    sequential = [_post(live_server, path, heatmaps="true") for path in phantom_images]
    sequential_s = time.perf_counter() - start
    with ThreadPoolExecutor(16) as pool:
        start = time.perf_counter()
        concurrent = list(pool.map(lambda p: _post(live_server, p, heatmaps="true"), phantom_images))
        concurrent_s = time.perf_counter() - start

    assert all(r.status_code == 200 for r in sequential + concurrent)
    for answers in (sequential, concurrent):
        assert [r.json()["report"] for r in answers] == [r.text for r in one_by_one]
        assert [r.json()["labels"] for r in answers] == [r.labels for r in one_by_one]
        for answer, expected in zip(answers, expected_maps):
            assert np.abs(_served_map(answer) - expected).max() <= 2
    assert concurrent_s < sequential_s, (concurrent_s, sequential_s)


def test_the_real_server_refuses_bad_input_and_goes_on(live_server, phantom_images):
    answer = httpx.post(live_server + "/v1/reports", files=[("images", ("x.png", b"not an image", "image/png"))])
    assert answer.status_code == 422 and "x.png" in answer.json()["detail"]
    assert _post(live_server, phantom_images[0]).status_code == 200


def test_maps_from_the_real_model_cover_every_sentence(live_server, real_generator, phantom_images):
    body = _post(live_server, phantom_images[1], heatmaps="true").json()
    report = real_generator(phantom_images[1], heatmaps=True)
    assert [m["sentence"] for m in body["heatmaps"]] == [m.sentence for m in report.heatmaps]
    assert body["heatmaps"] and all(m["png"].startswith("data:image/png;base64,") for m in body["heatmaps"])
