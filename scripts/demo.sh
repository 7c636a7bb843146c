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
need=()
for p in clang libclang-dev cmake ninja-build procps; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "building cidlb and cidlb-demo (release; a few minutes the first time)..."
cargo build --release --locked -p cidlb -p cidlb-demo

target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/cidlb-demo" --cidlb "$target/release/cidlb" "$@"
