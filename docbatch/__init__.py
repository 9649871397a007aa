"""docbatch's command line: the HTTP client commands, the process launchers and
the embedded ``docbatch run``."""

from importlib.metadata import PackageNotFoundError, version

try:
    # One place for the version: pyproject.toml, read back from the installed metadata.
    __version__ = version("docbatch")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
