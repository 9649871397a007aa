#!/usr/bin/env bash
# Puts Prometheus' promtool at $1 (default .venv/bin/promtool), for `make alerts-check`.
# It comes out of Debian's prometheus package, unpacked, not installed: no Prometheus
# server is set up or started; only the target and a cached copy for later clones
# (~/.cache/docbatch/promtool) are written. Needs apt-get (apt-get update runs first when
# root; otherwise the package lists must be there).
set -euo pipefail
target=${1:-.venv/bin/promtool}
if [ -x "$target" ]; then
    exit 0
fi
if command -v promtool >/dev/null 2>&1; then
    ln -sf "$(command -v promtool)" "$target"
    exit 0
fi
# One download per machine: later fresh clones (CI) copy it from the cache.
cache="${XDG_CACHE_HOME:-$HOME/.cache}/docbatch/promtool"
if [ -x "$cache" ]; then
    install -m 0755 "$cache" "$target"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-promtool: no apt-get here; install Prometheus' promtool and put it on PATH" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
if [ "$(id -u)" = 0 ]; then
    apt_get update -qq
fi
(cd "$work" && apt_get -o APT::Sandbox::User="$(id -un)" download -qq prometheus)
dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool
install -m 0755 "$work/usr/bin/promtool" "$target"
mkdir -p "$(dirname "$cache")" && install -m 0755 "$work/usr/bin/promtool" "$cache"
"$target" --version | head -n 1 >&2
