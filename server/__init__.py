"""Lintel server package."""
