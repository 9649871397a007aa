#!/usr/bin/env bash
# System packages the tests need beyond Python: headless Chromium for the dashboard test.
# Idempotent: installs only what is missing. Run as root (CI, dev containers).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
