"""Lintel registry package."""
