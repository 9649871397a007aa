"""Shared core of docbatch: tables, migrations, settings and I/O models.

Imports neither FastAPI nor Celery, so the api, the worker and the CLI can all
depend on it.
"""
