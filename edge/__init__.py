"""Lintel edge package."""
