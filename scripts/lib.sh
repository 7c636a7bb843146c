# Shared by scripts/demo.sh and scripts/test.sh (sourced, not run).

# Installs the Debian packages among "$@" that are missing (apt-get runs as root here).
ensure_packages() {
    local need=() p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}
