"""Remote registry import: ``POST /api/v1/sites/{site}/registry/import`` (see views.py)."""
