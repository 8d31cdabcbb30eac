"""The register import pages' world: a site whose gallery uses the bundled engine's model.

Shared by the HTTP tests (test_imports.py) and the browser test
(test_browser_imports.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from sqlalchemy import Engine

from server.sites.service import create_site
from server.users.service import create_user
from tests.server.clusters.support import new_session
from tests.server.imports.data import ENGINE_MODEL
from tests.web.world import CHEAP_HASH


@dataclass(frozen=True)
class ImportWorld:
    site: int
    other_site: int


def build_import_world(engine: Engine) -> ImportWorld:
    """Sites 幸福小区 (engine model) and Other Court; admin, manager, viewer, other manager."""
    with new_session(engine) as s:
        site = create_site(session=s, name="幸福小区", model_id=ENGINE_MODEL)
        other = create_site(session=s, name="Other Court", model_id=ENGINE_MODEL)
        for username, role, sites in (
            ("admin", "admin", []),
            ("mgr", "manager", [site.id]),
            ("viewer", "viewer", [site.id]),
            ("mgr_other", "manager", [other.id]),
        ):
            user = create_user(session=s, username=username, role=role, site_ids=sites)
            user.password_hash = CHEAP_HASH
        s.commit()
        return ImportWorld(site=site.id, other_site=other.id)


def wait_for(client: httpx.Client, job_id: int, timeout_s: float = 300) -> dict[str, object]:
    """Poll the job's progress (as the page's script does) until it stops running."""
    deadline = time.monotonic() + timeout_s
    while True:
        progress: dict[str, object] = client.get(f"/web/imports/{job_id}/progress").json()
        if progress["status"] not in ("checking", "applying"):
            return progress
        if time.monotonic() > deadline:
            raise AssertionError(f"import {job_id} still {progress['status']}")
        time.sleep(0.1)
