"""Wiring of the web UI into the app: router, static files, security headers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.web.devices import router as devices_router
from server.web.imports import install_imports
from server.web.likely import router as likely_router
from server.web.register import router as register_router
from server.web.routes import PREFIX, error_page, router
from server.web.users import router as users_router

STATIC_DIR = Path(__file__).resolve().parent / "static"
FAVICON = STATIC_DIR / "favicon.svg"

# No inline scripts or styles anywhere: scripts and CSS come from /web/static only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
)


class WebSecurityHeaders:
    """Adds CSP, X-Frame-Options, Referrer-Policy and nosniff to every web UI response."""

    def __init__(self, app: ASGIApp, prefix: str = PREFIX) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_web(app: FastAPI) -> None:
    """Mount the manager web UI under ``/web`` (pages, static files, headers)."""
    app.include_router(router)
    app.include_router(likely_router)
    app.include_router(users_router)
    app.include_router(register_router)
    install_imports(app)
    app.include_router(devices_router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="web-static")
    app.add_middleware(WebSecurityHeaders)

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        # The queue sends a logged-out visitor on to the login page.
        return RedirectResponse(f"{PREFIX}/queue", status_code=303)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        # Browsers ask for it on every page; an SVG is what they get (they all render it).
        return FileResponse(
            FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        """Unknown pages under /web get the HTML 404 page; the JSON API keeps JSON."""
        assert isinstance(exc, StarletteHTTPException)
        path = request.url.path
        if exc.status_code == 404 and (path == PREFIX or path.startswith(PREFIX + "/")):
            return error_page(request, 404, "error.not_found")
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, not_found)
