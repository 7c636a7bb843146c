#!/usr/bin/env bash
# Builds cidlb and its demo (release) and runs the demo: three real DTLS servers, cidlb in
# front of them, clients whose NAT moves them mid-session; first with CID routing, then
# with address-only routing, and a table comparing the two. Takes a few seconds once
# built. Arguments go to the demo, e.g. `./scripts/demo.sh --clients 100`
# (`--help` lists them). Exits 0 when every session survived with CID routing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the demo's DTLS peers need to build (Mbed TLS through bindgen + cmake),
# as in scripts/test.sh, and procps for `kill`, with which the demo stops cidlb (SIGTERM).
. scripts/lib.sh  # the working directory is the repository root
ensure_packages clang libclang-dev cmake ninja-build procps

echo "building cidlb and cidlb-demo (release; a few minutes the first time)..."
cargo build --release --locked -p cidlb -p cidlb-demo

target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/cidlb-demo" --cidlb "$target/release/cidlb" "$@"
