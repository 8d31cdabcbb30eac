"""English and Simplified Chinese messages for the web UI.

Catalogs are JSON files in ``locales/`` (one flat ``key -> message`` object
each, ``str.format`` placeholders). The language is the ``lintel_lang``
cookie set by the switch, else the best match of ``Accept-Language``, else
English. A key missing from a catalog falls back to English, then to the key
itself (its last part), so a half-translated page still renders.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

from starlette.requests import Request

LANGS = ("en", "zh-CN")
DEFAULT_LANG = "en"
LANG_COOKIE = "lintel_lang"
LOCALES_DIR = Path(__file__).resolve().parent / "locales"


@cache
def catalog(lang: str) -> dict[str, str]:
    """The messages of one language (read once per process)."""
    data = json.loads((LOCALES_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"locale {lang}: expected a flat object of strings")
    return data


def pick_language(accept_language: str | None, cookie: str | None = None) -> str:
    """The UI language: the cookie if valid, else the best ``Accept-Language`` match."""
    if cookie in LANGS:
        return cookie
    best: tuple[float, int, str] | None = None
    for n, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0 or not tag:
            continue
        # Any Chinese (zh, zh-cn, zh-hans, zh-tw...) gets the one Chinese catalog we have.
        lang = "zh-CN" if tag.split("-")[0] == "zh" else "en" if tag.split("-")[0] == "en" else None
        if lang is None:
            continue
        # Highest q wins; ties go to the earlier entry.
        if best is None or (q, -n) > (best[0], best[1]):
            best = (q, -n, lang)
    return best[2] if best else DEFAULT_LANG


def request_language(request: Request) -> str:
    """The language of this request."""
    return pick_language(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE))


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **values)`` for templates."""
    own = catalog(lang)
    fallback = catalog(DEFAULT_LANG)

    def t(key: str, **values: object) -> str:
        # Unknown dynamic keys (a new event kind) show their last part, not "event.x".
        message = own.get(key) or fallback.get(key) or key.rsplit(".", 1)[-1]
        return message.format(**values) if values else message

    return t
