"""docbatch: bulk document processing with pretrained models.

The Python client (``docbatch[client]`` is enough)::

    from docbatch import Client
    job = Client("http://docbatch:8000", api_key="dbk_...").submit(
        paths=["inbox/"], tasks=["summarize"])
    job.wait()
    rows = list(job.iter_results())

``Client``/``AsyncClient`` are imported on first use, so ``docbatch --version`` and the
server processes do not load httpx for nothing.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    # One place for the version: pyproject.toml, read back from the installed metadata.
    __version__ = version("docbatch")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"


__all__ = ["ApiError", "ApiUnreachable", "AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> object:
    if name in ("Client", "ApiError", "ApiUnreachable", "Job"):
        from docbatch import client

        return getattr(client, name)
    if name in ("AsyncClient", "AsyncJob"):
        from docbatch import async_client

        return getattr(async_client, name)
    raise AttributeError(name)
