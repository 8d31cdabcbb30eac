"""How many people a site holds face templates of (the 100,000 filing threshold).

China's 人脸识别技术应用安全管理办法 asks a controller holding the face data
of 100,000 people or more to file with the local cyberspace authority; Lintel
warns from :data:`WARN_AT` so there is time to file (or to purge).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.occupants.models import FaceTemplate
from server.sites.models import Site

FILING_THRESHOLD = 100_000
WARN_AT = 90_000


@dataclass(frozen=True, slots=True)
class TemplateCount:
    """Distinct people with at least one face template on a site."""

    site_id: int
    site: str
    people_with_templates: int
    warning: str | None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def warning_for(people: int) -> str | None:
    """The warning to show for ``people`` enrolled, or None below :data:`WARN_AT`."""
    if people >= FILING_THRESHOLD:
        return f"{people} people enrolled: at or above the {FILING_THRESHOLD} filing threshold"
    if people >= WARN_AT:
        return f"{people} people enrolled: nearing the {FILING_THRESHOLD} filing threshold"
    return None


def people_with_templates(*, session: Session, site_id: int | None = None) -> list[TemplateCount]:
    """Per site (or one site): distinct occupants holding templates, with the warning."""
    per_site = select(
        FaceTemplate.site_id, func.count(func.distinct(FaceTemplate.occupant_id))
    ).group_by(FaceTemplate.site_id)
    counts: dict[int, int] = {int(sid): int(n) for sid, n in session.execute(per_site)}
    query = select(Site.id, Site.name).order_by(Site.id)
    if site_id is not None:
        query = query.where(Site.id == site_id)
    out = []
    for sid, name in session.execute(query):
        n = int(counts.get(sid, 0))
        out.append(
            TemplateCount(site_id=sid, site=name, people_with_templates=n, warning=warning_for(n))
        )
    return out
