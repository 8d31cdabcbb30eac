"""Every model module, imported so ``Base.metadata`` is complete (Alembic, tests).

A new domain package adds its ``models`` import here.
"""

from __future__ import annotations

from server.audit import models as audit_models
from server.cases import models as cases_models
from server.clusters import models as clusters_models
from server.db import Base
from server.devices import models as devices_models
from server.imports import models as imports_models
from server.notify import models as notify_models
from server.occupants import models as occupants_models
from server.sightings import models as sightings_models
from server.sites import models as sites_models
from server.users import models as users_models

__all__ = [
    "Base",
    "audit_models",
    "cases_models",
    "clusters_models",
    "devices_models",
    "imports_models",
    "notify_models",
    "occupants_models",
    "sightings_models",
    "sites_models",
    "users_models",
]
