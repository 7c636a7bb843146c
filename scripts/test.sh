#!/usr/bin/env bash
# Sets up a fresh machine of this project's kind and runs every check and test:
# formatting, clippy with -D warnings, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the test-support crates need to build real DTLS stacks
# (Mbed TLS through bindgen + cmake; wolfSSL through autotools).
need=()
for p in clang libclang-dev cmake ninja-build autoconf automake libtool; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
