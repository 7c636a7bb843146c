#!/usr/bin/env bash
# Sets up a fresh machine of this project's kind and runs every check and test:
# formatting, clippy with -D warnings, the whole test suite, then a short fuzz run of
# each cargo-fuzz target (about 3½ minutes on a fresh 2-core machine, see fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the test-support crates need to build real DTLS stacks
# (Mbed TLS through bindgen + cmake; wolfSSL through autotools), the XDP plane's
# (crates/cidlb-xdp: clang compiles its C program against libbpf-dev's headers;
# iproute2 and ethtool set up its network-namespace test), dnsmasq as the real DNS
# server of the DNS-backend test, and prometheus for promtool, which checks and
# unit-tests packaging/prometheus/'s alert rules and parses the Grafana dashboard's
# queries (crates/cidlb/tests/packaging.rs; Debian ships promtool in no smaller package).
. scripts/lib.sh  # the working directory is the repository root
ensure_packages clang libclang-dev cmake ninja-build autoconf automake libtool libbpf-dev iproute2 ethtool dnsmasq-base prometheus
# The tests in network namespaces (e2e_transparent): ip netns/link/rule/route, setpriv.
ensure_packages util-linux

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
test_log="$(mktemp)"
# Tests that need BPF or network namespaces (cidlb-xdp), or a tool such as promtool,
# skip where those are missing or not allowed; here (root, as CI runs, with the
# packages above) they must run: a skip becomes a failure.
export CIDLB_REQUIRE_PRIVILEGED=1
cargo test --workspace --locked 2>&1 | tee "$test_log"

# A short fuzz run of every cargo-fuzz target (fuzz/README.md), after the tests: a
# crash, a leak or a timeout fails the script. cargo-fuzz needs nightly flags; the
# machine has a stable toolchain, hence RUSTC_BOOTSTRAP=1. New inputs go to a
# temporary corpus (the committed seeds are read, never written); a crashing input
# is kept in fuzz/artifacts/TARGET/.
fuzz_seconds="${CIDLB_FUZZ_SECONDS:-20}"
# libFuzzer reads -max_total_time=0 as "no limit": only a positive count will do.
[[ "$fuzz_seconds" =~ ^[1-9][0-9]*$ ]] || { echo "CIDLB_FUZZ_SECONDS: not a positive integer" >&2; exit 2; }
if ! cargo fuzz --version >/dev/null 2>&1; then
    # Retried: a registry hiccup must not fail CI, but a persistent failure does.
    for attempt in 1 2 3; do
        echo "installing cargo-fuzz (attempt $attempt)"
        cargo install cargo-fuzz --locked && break
        [ "$attempt" -lt 3 ] || exit 1
        sleep 10
    done
fi
fuzz_tmp="$(mktemp -d)"
trap 'rm -rf "$fuzz_tmp" "$test_log"' EXIT
(
    cd fuzz
    export RUSTC_BOOTSTRAP=1
    cargo fuzz build
    for t in $(cargo fuzz list); do
        echo "fuzzing $t for ${fuzz_seconds}s"
        mkdir -p "$fuzz_tmp/$t"
        cargo fuzz run "$t" "$fuzz_tmp/$t" "corpus/$t" -- \
            -max_total_time="$fuzz_seconds" -print_final_stats=1
    done
)

# The closing summary of the whole run (the fuzz output above buries cargo's own).
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$test_log"
