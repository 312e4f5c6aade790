#!/usr/bin/env bash
# Installs what the dashboard's browser test needs, once: Debian's Chromium (if
# /usr/bin/chromium is missing) and playwright-core from this folder's package-lock.json into
# TOOLS_DIR/node_modules (default: <workspace>/target/browser-tools). No browser is downloaded
# by npm: the test drives /usr/bin/chromium.
#
# Idempotent and safe to run concurrently: runs hold a lock on TOOLS_DIR/.lock, and npm ci
# runs again only when the lock file differs from the one the installed tree came from (a
# stamp copy). An interrupted npm ci leaves no stamp, so the next run starts it over.
#
# Usage: setup.sh [TOOLS_DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${1:-$here/../../../target/browser-tools}"
mkdir -p "$tools"
tools="$(cd "$tools" && pwd)"

exec 9>"$tools/.lock"
flock 9

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

if [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing Debian's chromium" >&2
    apt_get update -q >&2
    apt_get install -y -q --no-install-recommends chromium >&2
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing Node.js and npm" >&2
    apt_get update -q >&2
    apt_get install -y -q --no-install-recommends nodejs npm >&2
fi

if ! cmp -s "$here/package-lock.json" "$tools/.installed-lock.json" \
    || [ ! -f "$tools/node_modules/playwright-core/package.json" ]; then
    echo "setup: npm ci into $tools" >&2
    rm -f "$tools/.installed-lock.json"
    cp "$here/package.json" "$here/package-lock.json" "$tools/"
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core downloads nothing, but be explicit.
    (cd "$tools" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts >&2)
    cp "$here/package-lock.json" "$tools/.installed-lock.json"
fi

echo "$tools"
