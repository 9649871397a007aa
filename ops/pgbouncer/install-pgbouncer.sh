#!/usr/bin/env bash
# Puts PgBouncer at $1 (default .venv/bin/pgbouncer), for tests/test_pgbouncer.py (`make
# test`). It comes out of Debian's pgbouncer package, unpacked, not installed: no service
# is set up or started, and no system file is touched. The binary and any shared library
# of its the machine lacks (c-ares, libevent, OpenSSL) go to $1's ../lib/pgbouncer, and $1
# is a wrapper that runs the binary with them on LD_LIBRARY_PATH; a copy is cached for
# later clones (~/.cache/docbatch/pgbouncer). A pgbouncer already on PATH is linked
# instead. Without apt-get it says so and exits 0: the PgBouncer test then skips, naming
# this script.
set -euo pipefail
target=${1:-.venv/bin/pgbouncer}
if [ -x "$target" ]; then
    exit 0
fi
found=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v pgbouncer || true)
if [ -n "$found" ]; then
    ln -sf "$found" "$target"
    exit 0
fi
libdir="$(cd "$(dirname "$target")" && pwd)/../lib/pgbouncer"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/docbatch/pgbouncer"

wrap() {
    # $1: a folder holding the pgbouncer binary and the libraries it needs.
    rm -rf "$libdir" && mkdir -p "$libdir" && cp -a "$1"/. "$libdir"/
    cat >"$target" <<'EOF'
#!/bin/sh
# PgBouncer unpacked from Debian's package by ops/pgbouncer/install-pgbouncer.sh.
dir="$(dirname "$(readlink -f "$0")")/../lib/pgbouncer"
LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$dir/pgbouncer" "$@"
EOF
    chmod 0755 "$target"
    "$target" --version | head -n 1 >&2
}

# One download per machine: later fresh clones (CI) copy it from the cache.
if [ -x "$cache/pgbouncer" ]; then
    wrap "$cache"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-pgbouncer: no apt-get here; put pgbouncer (1.18 or later) on PATH, or" \
        "tests/test_pgbouncer.py skips" >&2
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
if [ "$(id -u)" = 0 ]; then
    apt_get update -qq
fi
download() { (cd "$work" && apt_get -o APT::Sandbox::User="$(id -un)" download -qq "$@"); }
download pgbouncer
mkdir -p "$work/out" "$work/pkg"
dpkg-deb --fsys-tarfile "$work"/pgbouncer_*.deb | tar -x -C "$work/pkg" ./usr/sbin/pgbouncer
install -m 0755 "$work/pkg/usr/sbin/pgbouncer" "$work/out/pgbouncer"

missing() { LD_LIBRARY_PATH="$work/out" ldd "$work/out/pgbouncer" | awk '/not found/ {print $1}'; }
# The libraries pgbouncer links that a machine without the package may lack, by package.
for lib in $(missing); do
    case "$lib" in
        libcares.so.*) pkg=libc-ares2 ;;
        libevent-2.1.so.*) pkg=libevent-2.1-7 ;;
        libssl.so.3 | libcrypto.so.3) pkg=libssl3 ;;
        *) continue ;;
    esac
    [ -e "$work/$pkg.done" ] && continue
    download "$pkg"
    rm -rf "$work/pkg" && mkdir -p "$work/pkg"
    dpkg-deb --fsys-tarfile "$work/${pkg}"_*.deb | tar -x -C "$work/pkg"
    find "$work/pkg" -name '*.so*' \( -type f -o -type l \) -exec cp -a {} "$work/out/" \;
    touch "$work/$pkg.done"
done
still=$(missing)
if [ -n "$still" ]; then
    echo "install-pgbouncer: pgbouncer needs $still, which this machine lacks" >&2
    exit 1
fi
mkdir -p "$cache" && cp -a "$work/out"/. "$cache"/
wrap "$work/out"
