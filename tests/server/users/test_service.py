"""User service: roles, scopes, API tokens."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from server.errors import Conflict, InvalidInput
from server.sites.service import create_site
from server.users.service import create_api_token, create_user, site_ids_of, user_for_token


def test_api_token_authenticates_its_user(session: Session) -> None:
    site = create_site(session=session, name="S", model_id="m")
    user = create_user(session=session, username="v", role="viewer", site_ids=[site.id])
    _row, token = create_api_token(session=session, user_id=user.id)
    assert user_for_token(session=session, token=token) == user
    assert user_for_token(session=session, token=token + "x") is None
    assert site_ids_of(session=session, user=user) == {site.id}
    user.disabled = True
    assert user_for_token(session=session, token=token) is None


def test_roles_and_uniqueness(session: Session) -> None:
    admin = create_user(session=session, username="root", role="admin", password="pw")
    assert site_ids_of(session=session, user=admin) is None
    with pytest.raises(Conflict):
        create_user(session=session, username="root", role="admin")
    with pytest.raises(InvalidInput):
        create_user(session=session, username="x", role="superuser")
