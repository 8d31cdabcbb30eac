"""Human words for history, audit and actors, in the page's language.

Case events and audit events store machine detail (ids, nested evidence,
``system:worker``); pages must never show it raw. Templates call these as
Jinja filters (``{{ e|event_text }}``, ``{{ e|actor_text }}``,
``{{ e|audit_action }}``, ``{{ e|audit_object }}``, ``{{ e|audit_detail }}``);
each takes the translator ``t`` from the page's context, so the case page,
the audit page and any later page share one wording in both languages.

Rows carry ``names``: display names of the users and occupants their detail
refers to (``"user:3" -> "mgr_a"``, ``"occupant:7" -> "王芳"``), looked up by
:mod:`server.web.queries` in one query per page.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup, escape

Translate = Callable[..., str]

ACTOR_KINDS = {
    "system": "actor.system",
    "worker": "actor.system",
    "cli": "actor.cli",
    "device": "actor.device",
    "ip": "actor.address",
}
"""Non-user actors: ``kind[:id]`` -> message key (``{id}`` placeholder)."""

OBJECT_KINDS = {
    "case": "object.case",
    "sighting": "object.crop",
    "user": "object.user",
    "login": "object.login",
    "device": "object.device",
    "site": "object.site",
    "unknown_cluster": "object.cluster",
    "occupant": "object.occupant",
    "whitelist": "object.whitelist",
    "face_template": "object.face_template",
    "notify_channel": "object.notify_channel",
}
"""Audit object types -> message key (``{id}``, ``{name}`` placeholders)."""

DETAIL_KEYS = (
    "outcome",
    "result",
    "notes",
    "label",
    "templates",
    "fields",
    "on",
    "sessions",
    "api_tokens",
    "via",
)
"""Audit detail keys worth a manager's eye, in display order; the rest (nested
evidence, cluster ids, hashes) stays in the stored record and the export."""


class _Row(Protocol):
    actor: str
    actor_id: str
    names: Mapping[str, str]


def _t(context: Context) -> Translate:
    t: Translate = context["t"]
    return t


def actor_words(t: Translate, actor_id: str, label: str) -> str:
    """Who did it: a username, "Lintel (automatic)", "command line", "device 3"."""
    kind, _, ident = actor_id.partition(":")
    if kind == "user":
        return label if label != actor_id else t("actor.user", id=ident)
    key = ACTOR_KINDS.get(kind)
    if key is not None:
        return t(key, id=ident)
    return t("actor.other")


def _name(names: Mapping[str, str], kind: str, ident: object) -> str:
    return names.get(f"{kind}:{ident}", f"#{ident}")


def _pct(value: object) -> str:
    return f"{float(value) * 100:.0f}%" if isinstance(value, int | float) else "—"


def event_words(
    t: Translate, kind: str, detail: Mapping[str, Any], names: Mapping[str, str]
) -> str:
    """One case-history entry in sentences: what matters of its detail, names not ids."""
    parts: list[str] = []
    if kind == "opened":
        days = detail.get("days")
        n_days = len(days) if isinstance(days, list) else days
        if isinstance(n_days, int):
            parts.append(t("history.opened", days=n_days, nights=detail.get("night_entries") or 0))
        if detail.get("occupant_id") is not None:
            parts.append(
                t(
                    "history.looks_like",
                    name=_name(names, "occupant", detail["occupant_id"]),
                    similarity=_pct(detail.get("similarity")),
                )
            )
    elif kind == "assigned":
        parts.append(t("history.assigned", name=_name(names, "user", detail.get("user_id"))))
    elif kind in ("call", "visit"):
        if detail.get("result"):
            parts.append(t("history.result", result=detail["result"]))
    elif kind == "closed":
        outcome = detail.get("outcome")
        parts.append(t("outcome." + str(outcome or "none")))
        if detail.get("occupant_id") is not None:
            parts.append(
                t(
                    "history.templates",
                    n=detail.get("templates") or 0,
                    name=_name(names, "occupant", detail["occupant_id"]),
                )
            )
        if detail.get("label"):
            parts.append(t("history.label", label=detail["label"]))
        if detail.get("into_case"):
            parts.append(t("history.into_case", id=detail["into_case"]))
    elif kind == "cluster_merged":
        parts.append(t("history.merged"))
    elif kind == "neighbour_match":
        parts.append(
            t(
                "history.looks_like",
                name=_name(names, "occupant", detail.get("occupant_id")),
                similarity=_pct(detail.get("similarity")),
            )
        )
    if detail.get("notes") and kind != "opened":
        parts.append(t("history.notes", notes=detail["notes"]))
    return " ".join(p if p.endswith((".", "。")) else p + t("history.stop") for p in parts)


@pass_context
def event_text(context: Context, row: Any) -> str:
    """``{{ e|event_text }}``: a case event's detail in words (an EventRow)."""
    return event_words(_t(context), row.kind, row.detail or {}, getattr(row, "names", {}) or {})


@pass_context
def event_kind(context: Context, kind: str) -> str:
    """``{{ e.kind|event_kind }}``: the event's name."""
    return _t(context)(f"event.{kind}")


@pass_context
def actor_text(context: Context, row: _Row) -> str:
    """``{{ e|actor_text }}``: who did it, in words."""
    return actor_words(_t(context), getattr(row, "actor_id", "") or row.actor, row.actor)


@pass_context
def audit_action(context: Context, action: str) -> str:
    """``{{ e.action|audit_action }}``: "Viewed a face crop", not ``crop.view``."""
    t = _t(context)
    key = f"audit.action.{action}"
    words = t(key)
    if words != key.rsplit(".", 1)[-1]:
        return words
    if action.startswith("case."):
        return t("audit.action.case_event", event=t(f"event.{action[5:]}"))
    return action.replace(".", " ").replace("_", " ")


@pass_context
def audit_object(context: Context, row: Any) -> str:
    """``{{ e|audit_object }}``: "Case #3", "Face crop (case #3)", "User mgr_a"."""
    t = _t(context)
    kind, ident = row.object_type, row.object_id or ""
    names: Mapping[str, str] = getattr(row, "names", {}) or {}
    if kind == "sighting" and isinstance(row.detail, Mapping) and row.detail.get("case_id"):
        return t("object.crop_of_case", id=row.detail["case_id"])
    if kind == "login":
        return t("object.login", name=ident)
    key = OBJECT_KINDS.get(kind)
    if key is None:
        return t("object.other")
    return t(key, id=ident, name=names.get(f"{kind}:{ident}", f"#{ident}"))


@pass_context
def audit_detail(context: Context, row: Any) -> str:
    """``{{ e|audit_detail }}``: the few detail fields a manager reads, labelled."""
    t = _t(context)
    detail = row.detail if isinstance(row.detail, Mapping) else {}
    out = []
    for key in DETAIL_KEYS:
        value = detail.get(key)
        if value in (None, "", [], {}):
            continue
        if key == "outcome":
            value = t(f"outcome.{value}")
        elif key == "via":
            value = t(f"via.{value}")
        elif key == "fields" and isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        out.append(t(f"detail.{key}", value=value))
    if detail.get("occupant_id") is not None and row.object_type != "occupant":
        name = _name(names_of(row), "occupant", detail["occupant_id"])
        out.append(t("detail.occupant", value=name))
    return "; ".join(out)


def names_of(row: Any) -> Mapping[str, str]:
    """A row's display names (empty when it has none)."""
    names: Mapping[str, str] = getattr(row, "names", {}) or {}
    return names


_COMMAND = re.compile(r"`([^`\n]+)`")


def commands(text: str) -> Markup:
    """A message with its `command` spans as ``<code>``: the whole text (with any camera
    or channel name in it) is escaped first, so the only markup is the tags added here."""
    return Markup(_COMMAND.sub(r"<code>\1</code>", str(escape(text))))


FILTERS: dict[str, Callable[..., str]] = {
    "event_text": event_text,
    "event_kind": event_kind,
    "actor_text": actor_text,
    "audit_action": audit_action,
    "audit_object": audit_object,
    "audit_detail": audit_detail,
    "commands": commands,
}
"""Installed on the web templates' environment by :mod:`server.web.routes`."""
