"""Server settings: one pydantic-settings model, read from ``LINTEL_*`` variables.

``LINTEL_DATABASE_URL`` picks the database (PostgreSQL for a district, e.g.
``postgresql+psycopg://lintel@db/lintel``); left unset, the server uses an
embedded SQLite file ``<LINTEL_DATA_DIR>/lintel.sqlite3``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_KEY = "lintel-dev-secret-do-not-use-in-production"


class Settings(BaseSettings):
    """Everything the server reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="LINTEL_", extra="forbid")

    env: Literal["dev", "test", "prod"] = Field(
        default="dev", description="'prod' refuses the built-in secret key."
    )
    data_dir: Path = Field(
        default=Path("var"), description="SQLite file, crops and other local state."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in data_dir."
    )
    secret_key: SecretStr = Field(
        default=SecretStr(DEV_SECRET_KEY),
        description="Keys HMACs of ID numbers and session cookies; must be set outside dev.",
    )
    migrate_on_start: bool = Field(
        default=True, description="Run Alembic migrations to head when the app is created."
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted; larger ones get 413.",
    )
    max_import_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest registry import body (POST /api/v1/sites/{site}/registry/import, "
        "one register file in one request: ~3.1 KB a row with a face, so 64 MiB is ~20,000 "
        "rows); other routes keep max_body_bytes.",
    )
    default_model_id: str = Field(
        default="buffalo_s/w600k_mbf",
        min_length=1,
        description="Recognition model id given to new sites (the edge's "
        "'<pack>/<recogniser>' id); templates of other models are not served to their edges.",
    )
    # -- crops at rest (engineer P, server/privacy/crypto.py; rotation in server/README.md)
    crop_key: SecretStr | None = Field(
        default=None,
        description="Base64 of the 32-byte AES-GCM key that seals new face crops.",
    )
    crop_key_file: Path | None = Field(
        default=None,
        description="File of base64 keys, one a line: the first seals, the others only open.",
    )
    crop_old_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated base64 keys that only open crops (rotation).",
    )
    max_clock_ahead_s: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="How many seconds in the future a sighting's times may lie "
        "(edge clock skew); later ones are refused item by item and counted per device, "
        "because retention could never age them out.",
    )
    db_pool_size: int = Field(
        default=5, ge=1, le=100, description="Connections per worker (PostgreSQL)."
    )

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        # A leaked default key would let anyone recompute ID-number hashes.
        if self.env != "dev" and self.secret_key.get_secret_value() == DEV_SECRET_KEY:
            raise ValueError(
                "LINTEL_SECRET_KEY is the built-in development key; set a random one "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`) "
                "or set LINTEL_ENV=dev"
            )
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL in use (the explicit one, or the SQLite file)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'lintel.sqlite3').resolve()}"
