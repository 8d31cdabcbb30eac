"""The web pages for ``likely_occupant`` clusters: review, confirm, reject.

The clustering worker labels a cluster ``likely_occupant`` instead of opening
a case when its members keep pointing at one registered occupant
(:mod:`server.cases.attribution`). Here a manager sees who it points at, the
evidence and the best crops, and confirms it (its faces become that occupant's
templates, one gallery bump) or rejects it (the case opens if due). Both go
through :mod:`server.cases.likely` like the JSON API, which audits them; the
route commits once. Crops are the case pages' ``/web/crops/{id}`` (audited
per view); scope and roles are those of :mod:`server.web.routes`.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from jinja2 import pass_context
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from server.cases import likely as likely_cases
from server.clusters.models import UnknownCluster
from server.deps import FormDep, SessionDep, UserDep, WebUser
from server.errors import NotFound
from server.web import queries
from server.web.routes import (
    PREFIX,
    TEMPLATES,
    OptionalId,
    WebRoute,
    _actor,
    _Form,
    _parse,
    _to_case,
    _visible_site,
    page,
)

router = APIRouter(prefix=PREFIX, route_class=WebRoute, include_in_schema=False)


@pass_context
def _nav_count(context: Any) -> int:
    """The likely-occupant count of the nav bar (every page shows it).

    Pages are rendered without the route's session, so this reads with its own
    short one; the logged-out pages (no user) skip it.
    """
    user = context.get("user")
    request = context.get("request")
    if not isinstance(user, WebUser) or request is None:
        return 0
    session: Session = request.app.state.session_factory()
    try:
        return queries.likely_count(session=session, scope=user.scope)
    finally:
        session.close()


TEMPLATES.env.globals["likely_count"] = _nav_count


def _to_list(**query: int) -> Response:
    return RedirectResponse(f"{PREFIX}/likely?{urlencode(query)}", status_code=303)


def _settled(
    session: Session, user: WebUser, cluster_id: int | None, suppression: str
) -> tuple[UnknownCluster, str | None] | None:
    """The cluster a redirect after confirm/reject names (for its notice), if it is one."""
    if cluster_id is None:
        return None
    return queries.settled_cluster(
        session=session, scope=user.scope, cluster_id=cluster_id, suppression=suppression
    )


@router.get("/likely")
def likely_page(
    request: Request,
    session: SessionDep,
    user: UserDep,
    site: Annotated[OptionalId, Query()] = None,
    confirmed: Annotated[OptionalId, Query()] = None,
    rejected: Annotated[OptionalId, Query()] = None,
) -> Response:
    """Clusters that are probably a registered occupant the entrance keeps missing."""
    if site is not None:
        _visible_site(session, user, site)
    rows = queries.likely_occupants(session=session, scope=user.scope, site_id=site)
    sites = queries.visible_sites(session=session, scope=user.scope)
    return page(
        request,
        "likely.html",
        user=user,
        rows=rows,
        sites=sites,
        zones=queries.site_timezones(session=session, site_ids=[s.id for s in sites]),
        f_site=site,
        one=False,
        confirmed=_settled(session, user, confirmed, "occupant"),
        rejected=_settled(session, user, rejected, "not_occupant"),
    )


@router.get("/likely/{cluster_id}")
def likely_cluster_page(
    request: Request, session: SessionDep, user: UserDep, cluster_id: int
) -> Response:
    """One likely-occupant cluster (another site's, or a settled one, does not exist)."""
    rows = queries.likely_occupants(session=session, scope=user.scope, cluster_id=cluster_id)
    if not rows:
        raise NotFound(f"likely occupant cluster {cluster_id} does not exist")
    return page(
        request,
        "likely.html",
        user=user,
        rows=rows,
        sites=[],
        zones=queries.site_timezones(session=session, site_ids=[rows[0].site_id]),
        f_site=None,
        one=True,
        confirmed=None,
        rejected=None,
    )


@router.post("/likely/{cluster_id}/confirm")
def confirm(cluster_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """It is that occupant: the cluster's best faces become their templates (gallery bump)."""
    _actor(user)
    _parse(_Form, form)
    likely_cases.confirm_likely_occupant(
        session=session, cluster_id=cluster_id, actor=user.actor, site_ids=user.scope
    )
    session.commit()
    return _to_list(confirmed=cluster_id)


@router.post("/likely/{cluster_id}/reject")
def reject(cluster_id: int, form: FormDep, session: SessionDep, user: UserDep) -> Response:
    """Not that occupant: never attributed again; the case opens if the rule holds."""
    _actor(user)
    _parse(_Form, form)
    case = likely_cases.reject_likely_occupant(
        session=session, cluster_id=cluster_id, actor=user.actor, site_ids=user.scope
    )
    session.commit()
    return _to_case(case.id) if case is not None else _to_list(rejected=cluster_id)
