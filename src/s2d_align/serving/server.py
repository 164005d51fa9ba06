"""Running the app: load the model once, then uvicorn on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

from pathlib import Path

from s2d_align.serving.app import ServeOptions, create_app


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when there is one; chosen once, here at the entry point."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def serve(model: Path, host: str = "127.0.0.1", port: int = 8000, device: str = "auto", **options) -> None:
    """Serve ``model`` (a model folder or a stage checkpoint) until interrupted."""
    try:
        import uvicorn
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the server needs the 'serve' extra: pip install 's2d-align[serve]'") from err
    from s2d_align import ReportGenerator

    if not Path(model).is_dir():
        raise FileNotFoundError(f"no model folder at {model}: give a folder from 's2d-align export' or RUN/checkpoints/s3")
    settings = ServeOptions(**options)
    if settings.max_batch < 1 or settings.max_upload_mb <= 0 or settings.max_wait_ms < 0:
        raise ValueError("--max-batch must be 1 or more, --max-upload-mb above 0 and --max-wait-ms 0 or more")
    generator = ReportGenerator.from_pretrained(model, device=resolve_device(device))
    app = create_app(generator, settings)
    print(f"serving {model} on http://{host}:{port}/ (research use only, not for clinical use)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
