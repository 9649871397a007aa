"""docbatch's command line: the HTTP client commands, the process launchers and
the embedded ``docbatch run``."""
