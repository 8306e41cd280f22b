"""Web service and page: `create_app()` builds the FastAPI app, `run()` serves it with uvicorn."""

from __future__ import annotations

from pathlib import Path

from ..predict import PredictOptions
from .app import create_app

__all__ = ["create_app", "run"]


def run(options: PredictOptions | None = None, host: str = "127.0.0.1", port: int = 8000,
        feedback_db: str | Path | None = None, **kwargs: object) -> None:
    """Load the model once and serve the API and page until interrupted."""
    import uvicorn  # only here: building the app (tests) needs no server

    from .limits import return_freed_memory_to_the_os

    return_freed_memory_to_the_os()
    app = create_app(options=options, feedback_db=feedback_db, **kwargs)  # type: ignore[arg-type]
    # One process: the model lives in memory once and the micro-batcher needs every request on one event loop.
    uvicorn.run(app, host=host, port=port, log_level="info")
