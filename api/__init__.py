"""The HTTP API (FastAPI): one router per resource under ``api/routers``."""
