"""Turning finished runs into the papers' tables, beside the published numbers."""
