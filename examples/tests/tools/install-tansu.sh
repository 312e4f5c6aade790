#!/usr/bin/env bash
# Installs tansu, the Kafka-protocol broker the Kafka tests run against (docs/kafka.md, "The
# test broker"), from crates.io with `cargo install --locked`, pinned to one version and built
# with only the `libsql` storage engine (the engine the tests use: `--storage-engine
# sqlite://FILE`). The build is cached under the workspace's target/ (or $CARGO_TARGET_DIR) in
# a directory named after the version, the features and the build settings, so a cached build
# is reused and any change builds anew. Idempotent, and safe to run from several tests at once
# (one build at a time, under a lock). Needs crates.io and the C compiler build-essential
# brings (libsql compiles SQLite); prints the binary's path as its last line, `TANSU=…`.
#
# The build is the slow part (minutes, see docs/kafka.md); a test broker need not be fully
# optimised. Measured: Rust at opt-level 0 with SQLite's C at -O3 builds in half the CPU time
# of opt-level 1 and serves the conformance test nearly as fast (the broker's time goes to
# SQLite); all at opt-level 0 makes that test 2.5 times slower.
set -euo pipefail

version="0.6.0"
features="libsql"
# Release-profile settings for the broker's build only (cargo reads them from the
# environment, and the per-package one from --config); part of the cache key.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=0
export CARGO_PROFILE_RELEASE_DEBUG=0
export CARGO_PROFILE_RELEASE_LTO=off
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256
export CARGO_PROFILE_RELEASE_INCREMENTAL=false
export CARGO_PROFILE_RELEASE_STRIP=debuginfo
sqlite_opt=3
settings="o${CARGO_PROFILE_RELEASE_OPT_LEVEL}-sqlite${sqlite_opt}-cgu${CARGO_PROFILE_RELEASE_CODEGEN_UNITS}"

workspace="$(cd "$(dirname "$0")/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-${workspace}/target}"
tools="${target}/tools"
cache="${tools}/tansu-${version}-${features//,/+}-${settings}"
binary="${cache}/bin/tansu"

mkdir -p "$tools"
exec 9>"${tools}/install-tansu.lock"
flock 9

if [ ! -x "$binary" ]; then
    # Other versions, features or settings are stale now: drop them (each is a few MB, but a
    # half-finished build directory is GBs).
    for old in "${tools}"/tansu-*; do
        [ -e "$old" ] && [ "$old" != "$cache" ] && rm -rf "$old"
    done
    echo "install-tansu: building tansu ${version} (features: ${features}, ${settings}) into ${cache}" >&2
    start=$(date +%s)
    # The build directory is kept until the install succeeds, so an interrupted build resumes.
    cargo install tansu --locked --version "=${version}" \
        --no-default-features --features "${features}" \
        --config "profile.release.package.libsql-ffi.opt-level=${sqlite_opt}" \
        --root "$cache" --target-dir "${cache}/build" >&2
    rm -rf "${cache}/build"
    echo "install-tansu: built in $(( $(date +%s) - start )) s" >&2
fi
echo "TANSU=${binary}"
