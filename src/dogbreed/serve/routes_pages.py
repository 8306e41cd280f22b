"""The page: `/` (index.html), its static files, and `/docs` served offline (Swagger UI from fastapi-offline)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def offline_docs_dir() -> Path | None:
    """Swagger UI files shipped by the `fastapi-offline` package, so /docs needs no CDN."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.origin:
        return None
    d = Path(spec.origin).parent / "static"
    return d if (d / "swagger-ui-bundle.js").exists() else None


def add_pages(app: FastAPI, docs_dir: Path | None) -> None:
    """The page, its static files, the favicon and the offline API docs (mounted on the app itself: routers cannot
    mount static folders)."""
    if docs_dir is not None:
        app.mount("/docs-static", StaticFiles(directory=docs_dir), name="docs-static")

        @app.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                                       title="dogbreed API", swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-static/swagger-ui.css",
                                       swagger_favicon_url="/static/favicon.svg")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: uptime checks and link checkers
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


