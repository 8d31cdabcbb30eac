"""Alembic revision scripts (a package so a regular install ships them)."""
