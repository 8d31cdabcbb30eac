"""The FastAPI app factory.

``create_app(settings)`` builds one app: engine, migrations to head (unless
``migrate_on_start`` is off), routers, error handler, metrics and limits.
``app_from_env`` is the uvicorn factory (``uvicorn --factory server.app:app_from_env``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine, text

from edge.wire import API_PREFIX, SightingBatch
from server.cases.views import router as cases_router
from server.db import make_engine, make_session_factory, upgrade
from server.devices.views import router as devices_router
from server.errors import install_handlers
from server.limits import BodyDeadline, BodySizeLimit, LimitOverride
from server.metrics import MetricsMiddleware, make_metrics
from server.metrics import render as render_metrics
from server.privacy.crypto import install_keyring, load_keyring
from server.privacy.views import router as privacy_router
from server.registry_api.views import IMPORT_PATH, importer_check
from server.registry_api.views import router as registry_router
from server.settings import Settings
from server.sightings.views import router as sightings_router
from server.web.imports import UPLOAD_PATH, uploader_check
from server.web.install import install_web

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """Build the server app. Pass ``engine`` to share one (tests); otherwise one is made."""
    settings = settings or Settings()
    owns_engine = engine is None
    if engine is None:
        engine = make_engine(
            settings.sqlalchemy_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout_s=settings.db_pool_timeout_s,
        )
    if settings.migrate_on_start:
        upgrade(engine)
    # Crops are sealed at rest; outside dev/test a missing key refuses to start (engineer P).
    install_keyring(load_keyring(settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_engine:
            engine.dispose()

    app = FastAPI(
        title="Lintel",
        version=VERSION,
        description="Building-access occupant verification: device API and management.",
        lifespan=lifespan,
    )
    metrics = make_metrics()
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.metrics = metrics
    install_handlers(app)
    app.include_router(devices_router, prefix=API_PREFIX)
    app.include_router(sightings_router, prefix=API_PREFIX)
    app.include_router(cases_router, prefix=API_PREFIX)
    app.include_router(privacy_router, prefix=API_PREFIX)
    app.include_router(registry_router, prefix=API_PREFIX)
    # Manager web UI (engineer W): pages under /web, their static files and headers.
    install_web(app)
    # Each add wraps the ones before: the size limit (added last) is outermost and
    # acts before anything reads the body; the deadline, innermost, reads the whole
    # body before any route's dependency can take a database connection.
    app.add_middleware(BodyDeadline, timeout_s=settings.body_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        overrides=[
            LimitOverride(
                IMPORT_PATH,
                settings.max_import_body_bytes,
                allow=importer_check(app.state.session_factory),
            ),
            # The register and its photos zip uploaded in the browser: the same cap.
            LimitOverride(
                UPLOAD_PATH,
                settings.max_import_body_bytes,
                allow=uploader_check(app.state.session_factory, settings),
            ),
        ],
    )

    @app.get("/healthz", tags=["ops"], summary="Liveness and database reachability")
    def healthz() -> JSONResponse:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # any driver error means "not ready"; details go to the log
            log.exception("health check: database unreachable")
            return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    def metrics_endpoint() -> Response:
        return Response(render_metrics(metrics), media_type=CONTENT_TYPE_LATEST)

    _document_raw_bodies(app)
    return app


def _document_raw_bodies(app: FastAPI) -> None:
    """Put the wire models that routes parse by hand into the OpenAPI components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        extra = SightingBatch.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, sub in extra.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components["SightingBatch"] = extra
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """Uvicorn factory: settings from ``LINTEL_*`` environment variables."""
    return create_app(Settings())
