"""The real server (subprocess on 127.0.0.1) with a real tiny trained model: 16 simultaneous uploads."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def _post(url, path, **params):
    with path.open("rb") as handle:
        return httpx.post(url + "/v1/reports", params=params, timeout=300,
                          files=[("images", (path.name, handle.read(), "image/png"))])


def test_sixteen_simultaneous_uploads_equal_their_one_by_one_answers_and_are_faster(live_server, real_generator,
                                                                                  phantom_images):
    expected = [real_generator(path).text for path in phantom_images]
    assert len(set(expected)) > 1  # the answers depend on the image, so a mix-up could not pass

    start = time.perf_counter()
    sequential = [_post(live_server, path) for path in phantom_images]
    sequential_s = time.perf_counter() - start
    with ThreadPoolExecutor(16) as pool:
        start = time.perf_counter()
        concurrent = list(pool.map(lambda p: _post(live_server, p), phantom_images))
        concurrent_s = time.perf_counter() - start

    assert all(r.status_code == 200 for r in sequential + concurrent)
    assert [r.json()["report"] for r in sequential] == expected
    assert [r.json()["report"] for r in concurrent] == expected
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
