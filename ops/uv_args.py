"""Print pip's package sources as uv options: ``uv pip install $(python ops/uv_args.py PIP) ...``

uv reads none of pip's configuration (pip.conf, /etc/xdg/pip, PIP_* variables). Where
pip is set up to find wheels on local disk (``find-links``) or extra indexes, uv must
be told the same, or it resolves other builds than pip would (on a CPU box with a CPU
torch wheel on disk, uv would fetch the CUDA torch from PyPI, several GB). pip merges
all its indexes and takes the best version; ``unsafe-best-match`` makes uv do the same.
"""

from __future__ import annotations

import subprocess
import sys

# pip's option -> uv's (the same flags; one value each).
OPTIONS = ("find-links", "index-url", "extra-index-url", "constraint")
# pip's scopes, weakest first: a later one overrides an earlier one.
SCOPES = ("global", "user", "site", ":env:")


def pip_config(pip: str) -> dict[str, str]:
    out = subprocess.run(
        [pip, "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    found: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        scope, _, option = key.rpartition(".")
        found.setdefault(option, {})[scope] = value.strip().strip("'\"")
    return {
        option: next(by[s] for s in reversed(SCOPES) if s in by)
        for option, by in found.items()
        if any(s in by for s in SCOPES)
    }


def main() -> None:
    config = pip_config(sys.argv[1] if len(sys.argv) > 1 else "pip")
    args = ["--index-strategy", "unsafe-best-match"]
    for option in OPTIONS:
        for value in config.get(option, "").split():
            args += [f"--{option}", value]
    print(" ".join(args))


if __name__ == "__main__":
    main()
