#!/usr/bin/env bash
# A stable regression figure for the routing hot path: instructions per datagram
# (one client datagram routed + one reply inspected), counted by callgrind.
# Two runs with different N; the difference cancels setup. Repeatable on this machine
# whatever else it is doing (instructions, not seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build --release --locked -q -p cidlb-core --example hotpath
bin="${CARGO_TARGET_DIR:-target}/release/examples/hotpath"
ir() {
    local out
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" 2>&1 \
        | sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
    rm -f "$out"
}
a=$(ir 20000); b=$(ir 120000)
echo "callgrind: $(( (b - a) / 100000 )) instructions per datagram (route + reply), N=20000..120000"
