#!/usr/bin/env bash
# Installs moto's S3 server (`moto_server`, from PyPI) for the tests that run weir's storage on
# an S3-compatible server (the `s3` feature; weir_actors::testing::MotoServer). It goes into a
# Python virtual environment under the workspace's target/ (target/tools/moto-VERSION), which
# later runs reuse; nothing is installed system-wide but, if this machine lacks it, Debian's
# python3-venv. Idempotent, and safe to run from several tests at once (one install at a time,
# under a lock). Prints the server's path as its last line: MOTO_SERVER=….
set -euo pipefail

version="5.2.5"
here="$(cd "$(dirname "$0")" && pwd)"
workspace="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$workspace/target}"
venv="$target/tools/moto-$version"
mkdir -p "$target/tools"

exec 9>"$target/tools/moto.lock"
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

if [ ! -x "$venv/bin/moto_server" ]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        # Debian splits venv (and ensurepip) out of python3.
        rm -rf "$venv"
        apt_get install -y --no-install-recommends python3-venv >/dev/null 2>&1 || {
            apt_get update >/dev/null
            apt_get install -y --no-install-recommends python3-venv >/dev/null
        }
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "moto[server]==$version" >&2
fi
echo "MOTO_SERVER=$venv/bin/moto_server"
