#!/usr/bin/env bash
# System packages the test suite needs beyond Python: headless Chromium (Flower and
# /ui screenshots) and Tesseract (OCR of scanned pages). Idempotent: installs only what
# is missing, and only as root with apt-get; otherwise says what to install and leaves the tests to skip with a reason.
set -euo pipefail

packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
# OCR of scanned pages (DOCBATCH_EXTRACT_OCR=true); the OCR test skips without it.
command -v tesseract >/dev/null 2>&1 || packages+=(tesseract-ocr tesseract-ocr-eng)
# Fonts, so screenshots show text rather than boxes.
if command -v dpkg-query >/dev/null 2>&1 \
    && ! dpkg-query -W -f='${Status}' fonts-dejavu-core 2>/dev/null | grep -q "ok installed"; then
    packages+=(fonts-dejavu-core)
fi

if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${packages[*]}; install them (apt-get install ${packages[*]})" \
        "or the tests that need them skip" >&2
    exit 0
fi
echo "system-deps: installing ${packages[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt run (a parallel job) may hold the lock: wait for it rather than fail.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
apt_get update -qq
apt_get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
