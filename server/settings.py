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
MIN_PROD_SECRET_KEY_BYTES = 32
"""Shortest secret key prod accepts: it keys HMAC-SHA256 (ID-number hashes, whose importer
needs >= 16 bytes, and the session cookie's signature), and 32 bytes is SHA-256's own size."""
PROD_MIN_PASSWORD_LENGTH = 12
"""The password length prod asks for when ``LINTEL_PASSWORD_MIN_LENGTH`` is unset."""


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
        default=5,
        ge=1,
        le=100,
        description="Database connections each server worker keeps open (SQLite file or "
        "PostgreSQL); requests beyond pool + overflow wait db_pool_timeout_s for one.",
    )
    db_max_overflow: int = Field(
        default=5,
        ge=0,
        le=100,
        description="Extra connections a worker may open above db_pool_size under load "
        "(closed again when returned).",
    )
    db_pool_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds a request waits for a free connection before it fails "
        "(/healthz then answers 503, others 500); short, so an exhausted pool shows at once.",
    )
    body_timeout_s: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="Seconds a client has to send its whole request body; slower bodies get "
        "408. The body is read in full before the route runs, so a slow sender never holds a "
        "database connection (64 MiB import at ~1.1 MB/s fits in 60 s).",
    )
    password_min_length: int | None = Field(
        default=None,
        ge=1,
        le=128,
        description="Shortest password `user add` / `user set-password` accept; unset: "
        f"{PROD_MIN_PASSWORD_LENGTH} in prod, 1 in dev and test.",
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
        key_bytes = len(self.secret_key.get_secret_value().encode("utf-8"))
        if self.env == "prod" and key_bytes < MIN_PROD_SECRET_KEY_BYTES:
            raise ValueError(
                f"LINTEL_SECRET_KEY is {key_bytes} bytes; prod needs at least "
                f"{MIN_PROD_SECRET_KEY_BYTES} (it keys the ID-number hashes and the session "
                "cookies); set a random one, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return self

    @property
    def min_password_length(self) -> int:
        """The shortest password accepted (explicit setting, else by environment)."""
        if self.password_min_length is not None:
            return self.password_min_length
        return PROD_MIN_PASSWORD_LENGTH if self.env == "prod" else 1

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL in use (the explicit one, or the SQLite file)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'lintel.sqlite3').resolve()}"
