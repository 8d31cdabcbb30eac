"""Subject requests (GDPR Art. 15/17; 人脸识别办法 deletion on request): export and erase.

:func:`export_subject` gathers everything held on one occupant: the register
entry, unit, consent/notice record, face templates (metadata; the raw
embeddings only when asked), known sightings, clusters and cases linked to
them, and the audit events about them. :func:`erase_subject` removes it:
templates (the gallery version is bumped, so every edge drops them on its
next sync), the occupant row, the face data of clusters enrolled or merged
into them (crops, embeddings, cluster vectors); known sightings and cases
lose the link. Both are audited by the caller's actor.

Kept on purpose: the audit log (append-only; it holds ids and actions, not
faces) and case notes (free text written by managers, reviewed by hand).
A later registry import that still lists the person enrols them again:
remove them from the register first.
"""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from server.audit.models import AuditEvent
from server.audit.service import record
from server.cases.models import Case
from server.clusters.enums import ClusterStatus
from server.clusters.models import UnknownCluster
from server.db import checkpoint_after_commit
from server.occupants import service as occupants
from server.occupants.models import FaceTemplate
from server.privacy.purge import hold_site
from server.sightings import crops
from server.sightings.models import Sighting
from server.sites.models import Unit


def _iso(value: date | datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def export_subject(
    *, session: Session, occupant_id: int, actor: str, include_biometrics: bool = False
) -> dict[str, Any]:
    """Everything held on one occupant, JSON-ready; records ``subject.export``."""
    occ = occupants.get_occupant(session=session, occupant_id=occupant_id)
    unit = session.get(Unit, occ.unit_id) if occ.unit_id is not None else None
    templates = []
    for t in session.scalars(
        select(FaceTemplate).where(FaceTemplate.occupant_id == occ.id).order_by(FaceTemplate.id)
    ):
        entry: dict[str, Any] = {
            "id": t.id,
            "model_id": t.model_id,
            "quality": t.quality,
            "source": t.source,
            "created_at": _iso(t.created_at),
            "dimensions": len(t.embedding) // 4,
        }
        if include_biometrics:
            entry["embedding_f32le_b64"] = base64.b64encode(t.embedding).decode()
        templates.append(entry)
    sightings = [
        {
            "id": s.id,
            "started_at": _iso(s.started_at),
            "ended_at": _iso(s.ended_at),
            "camera_id": s.camera_id,
            "entrance_id": s.entrance_id,
            "similarity": s.similarity,
        }
        for s in session.scalars(
            select(Sighting).where(Sighting.occupant_id == occ.id).order_by(Sighting.started_at)
        )
    ]
    cluster_ids = list(
        session.scalars(select(UnknownCluster.id).where(UnknownCluster.occupant_id == occ.id))
    )
    cases = [
        {
            "id": c.id,
            "cluster_id": c.cluster_id,
            "status": c.status,
            "outcome": c.outcome,
            "opened_at": _iso(c.opened_at),
            "closed_at": _iso(c.closed_at),
            "notes": c.notes,
        }
        for c in session.scalars(
            select(Case)
            .where(or_(Case.occupant_id == occ.id, Case.cluster_id.in_(cluster_ids)))
            .order_by(Case.id)
        )
    ]
    events = [
        {"id": e.id, "at": _iso(e.at), "actor": e.actor, "action": e.action, "detail": e.detail}
        for e in session.scalars(
            select(AuditEvent)
            .where(AuditEvent.object_type == "occupant", AuditEvent.object_id == str(occ.id))
            .order_by(AuditEvent.id)
        )
    ]
    out = {
        "occupant": {
            "id": occ.id,
            "site_id": occ.site_id,
            "name": occ.name,
            "role": occ.role,
            "phone": occ.phone,
            "external_id": occ.external_id,
            "id_last4": occ.id_last4,
            # The keyed hash itself is useless to the subject; say that one is held.
            "id_number_hash_held": occ.id_hash is not None,
            "status": occ.status,
            "move_in": _iso(occ.move_in),
            "move_out": _iso(occ.move_out),
            "consent_at": _iso(occ.consent_at),
            "consent_ref": occ.consent_ref,
            "notice_given_at": _iso(occ.notice_given_at),
            "created_at": _iso(occ.created_at),
            "updated_at": _iso(occ.updated_at),
        },
        "unit": None if unit is None else {"id": unit.id, "address": unit.address},
        "templates": templates,
        "biometrics_included": include_biometrics,
        "sightings": sightings,
        "clusters": cluster_ids,
        "cases": cases,
        "audit_events": events,
    }
    record(
        session=session,
        actor=actor,
        action="subject.export",
        object_type="occupant",
        object_id=occ.id,
        site_id=occ.site_id,
        detail={"biometrics": include_biometrics, "templates": len(templates)},
    )
    return out


def erase_subject(*, session: Session, occupant_id: int, actor: str) -> dict[str, int]:
    """Erase one occupant's data everywhere (see the module doc); records ``subject.erase``."""
    occ = occupants.get_occupant(session=session, occupant_id=occupant_id)
    site_id = occ.site_id
    # The clusters' vectors are wiped below: keep the clustering worker off the site.
    hold_site(session=session, site_id=site_id, wait=True)
    templates = occupants.delete_templates(session=session, occupant_id=occ.id)
    clusters = list(
        session.scalars(select(UnknownCluster).where(UnknownCluster.occupant_id == occ.id))
    )
    cluster_ids = [c.id for c in clusters]
    face_rows = session.execute(
        select(Sighting.id, Sighting.has_crop).where(Sighting.cluster_id.in_(cluster_ids))
    ).all()
    crop_count = crops.delete_many(
        session=session, sighting_ids=[int(r[0]) for r in face_rows if r[1]]
    )
    session.execute(
        update(Sighting)
        .where(Sighting.cluster_id.in_(cluster_ids))
        .values(embedding=None)
        .execution_options(synchronize_session=False)
    )
    for c in clusters:
        c.total = b""
        c.exemplars = b""
        c.occupant_id = None
        if c.status == ClusterStatus.ACTIVE:
            c.status = ClusterStatus.RETIRED
    unlinked = session.execute(
        update(Sighting)
        .where(Sighting.occupant_id == occ.id)
        .values(occupant_id=None)
        .execution_options(synchronize_session=False)
    )
    case_links = session.execute(
        update(Case)
        .where(Case.occupant_id == occ.id)
        .values(occupant_id=None)
        .execution_options(synchronize_session=False)
    )
    session.delete(occ)
    session.flush()
    # SQLite: until a checkpoint, the erased rows' old pages are readable in -wal.
    checkpoint_after_commit(session)
    counts = {
        "templates": templates,
        "known_sightings_unlinked": int(getattr(unlinked, "rowcount", 0) or 0),
        "clusters_wiped": len(cluster_ids),
        "crops": crop_count,
        "case_links": int(getattr(case_links, "rowcount", 0) or 0),
    }
    record(
        session=session,
        actor=actor,
        action="subject.erase",
        object_type="occupant",
        object_id=occupant_id,
        site_id=site_id,
        detail=dict(counts),
    )
    return counts
