"""The REST API in-process: answers, errors (4xx JSON naming the problem), keys, uploads kept in memory."""

import base64
import io
import struct
import tempfile
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from s2d_align.chexpert import OBSERVATIONS
from s2d_align.serving.app import ServeOptions, create_app
from tests.serving.doubles import PixelMeanGenerator


def png(value: int, size=(16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width=20_000, height=20_000) -> bytes:
    """A valid 1x1 PNG whose header declares a 400-megapixel canvas (a decompression bomb)."""
    data = bytearray(png(0, (1, 1)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.fixture
def client_for():
    clients = []

    def make(generator=None, **options):
        client = TestClient(create_app(generator or PixelMeanGenerator(), ServeOptions(**options)))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def files(*contents, name="cxr.png"):
    return [("images", (f"{i}-{name}", content, "image/png")) for i, content in enumerate(contents)]


def test_health_names_the_model(client_for):
    answer = client_for().get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "model": {"model": "pixel-mean double"}}


def test_one_study_of_two_views_gets_its_report_and_fourteen_labels(client_for):
    answer = client_for().post("/v1/reports", files=files(png(40), png(90, (20, 10))))
    assert answer.status_code == 200
    body = answer.json()
    assert body["report"] == "Mean 40 of 16x12. Mean 90 of 20x10."
    assert list(body["labels"]) == list(OBSERVATIONS) and body["labels"]["Cardiomegaly"] == 1
    assert set(body) == {"report", "labels"}


def test_heatmaps_come_as_png_data_urls_when_asked(client_for):
    body = client_for().post("/v1/reports?heatmaps=true", files=files(png(40), png(90))).json()
    assert [m["sentence"] for m in body["heatmaps"]] == ["Sentence 0.", "Sentence 1."]
    assert [m["view"] for m in body["heatmaps"]] == [0, 1]
    for url in [m["png"] for m in body["heatmaps"]] + body["images"]:
        assert url.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (16, 12)


@pytest.mark.parametrize(
    "upload, status, error, words",
    [
        (files(b""), 400, "empty_file", "empty"),
        (files(b"this is a text file, not a radiograph"), 422, "unreadable", "0-cxr.png"),
        (files(bomb_png()), 413, "too_large", "0-cxr.png"),
        (files(*[png(1)] * 5), 400, "too_many_files", "at most 4"),
        (files(*[png(1)] * 9), 400, "too_many_files", "at most 4"),
        (files(png(1, (800, 800)) + b"\0" * 300_000), 413, "upload_too_large", "0.25 MB"),
        ([("photo", ("a.png", png(1), "image/png"))], 400, "unknown_field", "'images'"),
    ],
    ids=["zero-byte", "not-an-image", "decompression-bomb", "too-many-files", "far-too-many-files", "over-size-limit",
         "wrong-field"],
)
def test_bad_input_is_a_4xx_json_error_naming_the_problem_and_the_server_keeps_serving(client_for, upload, status,
                                                                                       error, words):
    client = client_for(max_upload_mb=0.25)
    answer = client.post("/v1/reports", files=upload)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error and words in answer.json()["detail"]
    assert client.post("/v1/reports", files=files(png(7))).json()["report"] == "Mean 7 of 16x12."


def test_no_multipart_body_is_refused(client_for):
    answer = client_for().post("/v1/reports", json={"images": []})
    assert answer.status_code == 400 and answer.json()["error"] == "not_multipart"


def test_a_study_the_model_fails_on_is_a_json_error_and_the_server_keeps_serving(client_for):
    client = client_for()
    answer = client.post("/v1/reports", files=files(png(13)))
    assert answer.status_code == 500 and answer.json()["error"] == "generation_failed"
    assert "pixel mean 13" in answer.json()["detail"]
    assert client.post("/v1/reports", files=files(png(8))).status_code == 200


def test_the_api_key_protects_the_rest_api_but_not_health_or_the_page(client_for):
    client = client_for(api_key="s3cret")
    refused = client.post("/v1/reports", files=files(png(5)))
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    assert client.post("/v1/reports", files=files(png(5)), headers={"X-API-Key": "wrong"}).status_code == 401
    for headers in ({"Authorization": "Bearer s3cret"}, {"X-API-Key": "s3cret"}):
        assert client.post("/v1/reports", files=files(png(5)), headers=headers).json()["report"] == "Mean 5 of 16x12."
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200


def test_uploads_stay_in_memory_unless_a_folder_is_given(client_for, tmp_path, monkeypatch):
    big = png(3, (1200, 1200)) + b"\0" * 2_000_000  # past Starlette's 1 MB spooling threshold
    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover",
                        lambda self: pytest.fail("an upload was spooled to a temporary file on disk"))
    assert client_for().post("/v1/reports", files=files(big)).json()["report"] == "Mean 3 of 1200x1200."
    kept = tmp_path / "uploads"
    client = client_for(save_uploads=kept)
    assert client.post("/v1/reports", files=files(png(4), png(6))).status_code == 200
    (folder,) = kept.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["0-0-cxr.png", "1-1-cxr.png"]
    assert (folder / "1-1-cxr.png").read_bytes() == png(6)


def test_the_page_says_research_use_only_and_loads_nothing_from_elsewhere(client_for):
    page = client_for().get("/").text
    assert "For research use only. Not for clinical use" in page
    assert "http://" not in page and "https://" not in page and "<script src" not in page


def test_openapi_documents_the_upload(client_for):
    client = client_for()
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/reports"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["images"]["maxItems"] == 4
