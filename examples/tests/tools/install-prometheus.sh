#!/usr/bin/env bash
# Installs Debian's `prometheus` package (the server and `promtool`) for the Prometheus test
# (examples/tests/prometheus.rs), unless both are already on PATH. Idempotent, and safe to run
# from several tests at once (one install at a time, under a lock). Needs Debian's
# package registry (as root, or sudo without a password); prints the paths of the two
# binaries as its last lines.
set -euo pipefail

lock="${TMPDIR:-/tmp}/weir-install-prometheus.lock"
exec 9>"$lock"
flock 9

# As root, or through sudo without a password (the browser test's setup does the same).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# apt-get as root, one apt-get at a time among weir's install scripts (they may run at once:
# CI starts them side by side, and parallel tests call them), under a lock they share; and
# waiting, not failing, while anything else holds dpkg's lock (DPkg::Lock::Timeout).
apt_get() {
    (
        flock 8
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
    ) 8>"${TMPDIR:-/tmp}/weir-apt.lock"
}

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    if ! apt_get install -y --no-install-recommends prometheus >/dev/null 2>&1; then
        apt_get update >/dev/null
        apt_get install -y --no-install-recommends prometheus >/dev/null
    fi
    # The package starts a system service; the tests run their own server on a port of
    # their own, so stop it where a service manager runs it (in a container nothing does).
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl stop prometheus >/dev/null 2>&1 || true
    fi
fi
echo "PROMETHEUS=$(command -v prometheus)"
echo "PROMTOOL=$(command -v promtool)"
