"""The ``docbatch`` command groups, one module each.

A module registers its commands with ``register(sub)`` (``sub`` is the top-level
``add_subparsers`` object); ``docbatch.cli.COMMANDS`` lists the modules in the order
``docbatch --help`` shows them. To add a group: write ``docbatch/commands/<group>.py``
with a ``register`` function and add its name to that list. Each command sets
``func(args) -> int`` (an exit code from ``docbatch.exitcodes``). ``common`` has the
shared options (``--api-url``/``--api-key``, ``--format``, the task options).
"""
