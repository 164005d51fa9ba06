"""The web app and REST API: one study's radiographs in, its report, labels and grounding maps out.

``create_app(generator)`` takes any object with the :class:`ReportGenerator`
interface (``batch(studies, heatmaps=...)`` and ``info``), so the HTTP layer
is the same for a model folder, a stage checkpoint, or a test's generator.

Endpoints:

- ``GET /`` -- the page (research use only, not for clinical use);
- ``GET /health`` -- liveness and the model's ``info``;
- ``POST /v1/reports`` -- multipart field ``images`` (1 to 4 views of one
  study); answers ``{"report", "labels"}``, plus ``"images"`` (the views as
  the model read them) and ``"heatmaps"`` (one PNG overlay per sentence, as
  data URLs; paper, Sec. 3.2's shared memory read back through the LLM's
  attention) with ``?heatmaps=true``;
- ``GET /docs`` -- the OpenAPI documentation.

Uploads are held in memory: the request body is read up to the size limit
and parsed without spooling to disk, so nothing is written unless
``save_uploads`` names a folder. Every bad input is answered with a 4xx JSON
body ``{"error": slug, "detail": message}``, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import re
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from s2d_align.serving.batching import DynamicBatcher

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.formparsers import MultiPartException, MultiPartParser
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("the server needs the 'serve' extra: pip install 's2d-align[serve]'") from err

PAGE = Path(__file__).with_name("page") / "index.html"
MAX_VIEWS = 4


@dataclass(frozen=True)
class ServeOptions:
    """What ``s2d-align serve`` sets beyond the model; see the module docstring."""

    api_key: str | None = None
    save_uploads: Path | None = None
    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_upload_mb: float = 20.0
    max_files: int = MAX_VIEWS


class RequestError(Exception):
    """A request the server refuses: HTTP status, a slug for clients, a message for people."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _default_reader() -> Callable[..., Any]:
    from s2d_align.inference.images import read_image

    return read_image


def create_app(generator, options: ServeOptions = ServeOptions(), read_image: Callable[..., Any] | None = None) -> FastAPI:
    """The FastAPI app serving ``generator``.

    ``read_image(data, name=...)`` turns one upload into a PIL image or
    raises a ``ValueError`` naming the problem (default:
    :func:`s2d_align.inference.images.read_image`, which reads DICOM too).
    Views are decoded before they are queued, so a bad file is refused
    without touching a batch.
    """
    read = read_image or _default_reader()
    batcher = DynamicBatcher(lambda studies, maps: generator.batch(list(studies), heatmaps=maps),
                             options.max_batch, options.max_wait_ms)
    limit = int(options.max_upload_mb * 1024 * 1024)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="S2D-Align report generation",
        description="Chest X-ray in, FINDINGS text out. For research use only; not for clinical use.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": err.error, "detail": err.detail}, status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": _slug(str(err.detail)), "detail": str(err.detail)}, status_code=err.status_code)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> dict:
        """Liveness, and what model is served (its ``info``)."""
        return {"status": "ok", "model": _jsonable(generator.info)}

    @app.post("/v1/reports", openapi_extra=_UPLOAD_SCHEMA,
              responses={400: {"description": "bad upload"}, 401: {"description": "missing or wrong API key"},
                         413: {"description": "upload over the size limit"}, 422: {"description": "not a usable image"}})
    async def reports(request: Request, heatmaps: bool = False) -> dict:
        """Report one study from 1 to 4 images (PNG, JPEG or DICOM) in the multipart field ``images``."""
        _authorise(request, options.api_key)
        uploads = await _read_uploads(request, limit, options.max_files)
        if options.save_uploads is not None:
            await asyncio.to_thread(_save, options.save_uploads, uploads)
        views = await asyncio.to_thread(_decode, read, uploads)
        try:
            report = await batcher.submit(views, heatmaps)
        except Exception as err:  # the model failed on this study; the server goes on serving
            raise RequestError(500, "generation_failed", f"generation failed: {err}") from err
        answer: dict[str, Any] = {"report": report.text, "labels": dict(report.labels)}
        if heatmaps:
            answer.update(await asyncio.to_thread(_maps, views, report.heatmaps))
        return answer

    return app


# OpenAPI cannot see a body parsed by hand; this tells /docs what to send.
_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                                   "minItems": 1, "maxItems": MAX_VIEWS,
                                   "description": "the views of one study: PNG, JPEG or DICOM"},
                    },
                }
            }
        },
    }
}


def _authorise(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("x-api-key")
    bearer = request.headers.get("authorization", "")
    if given is None and bearer.lower().startswith("bearer "):
        given = bearer[7:].strip()
    if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
        raise RequestError(401, "unauthorized",
                           "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")


async def _read_uploads(request: Request, limit: int, max_files: int) -> list[tuple[str, bytes]]:
    """The ``images`` parts of the multipart body, read into memory, refused past ``limit`` bytes."""
    mb = limit / (1024 * 1024)
    too_large = RequestError(413, "upload_too_large", f"upload larger than the limit of {mb:g} MB")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise RequestError(400, "not_multipart", "send the images as multipart/form-data in the field 'images'")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise too_large

    async def replay():
        yield bytes(body)

    parser = MultiPartParser(request.headers, replay(), max_files=max_files + 1, max_fields=16,
                             max_part_size=1024 * 1024)
    parser.spool_max_size = len(body) + 1  # keep every part in memory
    try:
        form = await parser.parse()
    except MultiPartException as err:
        message = err.message
        if message.startswith("Too many files"):
            raise RequestError(400, "too_many_files", f"too many files: at most {max_files} views per study") from err
        raise RequestError(400, "bad_multipart", f"malformed multipart body: {message}") from err
    try:
        files = [part for key, part in form.multi_items() if key == "images" and isinstance(part, UploadFile)]
        others = sorted({key for key, part in form.multi_items() if key != "images"})
        if others:
            raise RequestError(400, "unknown_field", f"unknown form field(s) {others}: send the images in 'images'")
        if not files:
            raise RequestError(400, "no_images", "no file in the multipart field 'images': send 1 to 4 views")
        if len(files) > max_files:
            raise RequestError(400, "too_many_files", f"too many files: {len(files)}, at most {max_files} views per study")
        uploads = []
        for part in files:
            data = await part.read()
            name = part.filename or "upload"
            if not data:
                raise RequestError(400, "empty_file", f"file {name!r} is empty (0 bytes)")
            uploads.append((name, data))
        return uploads
    finally:
        await form.close()


def _decode(read: Callable[..., Any], uploads: list[tuple[str, bytes]]) -> list:
    views = []
    for name, data in uploads:
        try:
            views.append(read(data, name=name))
        except ValueError as err:  # ImageError names the problem; its reason is the slug
            reason = getattr(err, "reason", "unreadable")
            status = 413 if reason == "too_large" else 422
            raise RequestError(status, reason, f"{name}: {err}") from err
    return views


def _save(folder: Path, uploads: list[tuple[str, bytes]]) -> Path:
    target = Path(folder) / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    target.mkdir(parents=True, exist_ok=False)
    for index, (name, data) in enumerate(uploads):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name)[:80] or "upload"
        (target / f"{index}-{safe}").write_bytes(data)
    return target


def _maps(views: list, heatmaps: list) -> dict[str, list]:
    from s2d_align.inference.grounding import overlay

    return {
        "images": [_data_url(view.convert("RGB")) for view in views],
        "heatmaps": [
            {"sentence": m.sentence, "view": int(m.view), "png": _data_url(overlay(views[m.view], m.map))}
            for m in heatmaps
        ],
    }


def _data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "error"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
