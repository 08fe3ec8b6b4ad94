#!/usr/bin/env bash
# Install the system servers the tests and the demo need, if they are missing.
#
# Idempotent: a tool already on PATH is left alone, so a second run does nothing.
# apt packages are installed as root, or through `sudo` when it works without a
# password; otherwise this prints what to install and exits non-zero.
# Servers are never started here (the tests and the demo start their own).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_BIN="$ROOT/.tools/bin"   # project-local tools (Go-installed ones go here)
export PATH="$TOOLS_BIN:$PATH"
export DEBIAN_FRONTEND=noninteractive

log() { printf '>> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Privilege and apt helpers
# ---------------------------------------------------------------------------

# Run a command as root: directly, or via non-interactive sudo. Returns 1 if neither works.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n env DEBIAN_FRONTEND=noninteractive "$@"
    else
        return 1
    fi
}

can_be_root() {
    [[ "$(id -u)" -eq 0 ]] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }
}

APT_UPDATED=0
apt_update_once() {
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        log "apt-get update"
        as_root apt-get update -q
        APT_UPDATED=1
    fi
}

# While installing, tell invoke-rc.d / deb-systemd-invoke not to start services
# (a policy-rc.d exiting 101 means "action forbidden"). An existing policy-rc.d is kept.
POLICY_RC_D=/usr/sbin/policy-rc.d
OWN_POLICY_RC_D=0
forbid_service_start() {
    if [[ ! -e "$POLICY_RC_D" ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY_RC_D && chmod 755 $POLICY_RC_D"
        OWN_POLICY_RC_D=1
    fi
}
restore_service_start() {
    if [[ "$OWN_POLICY_RC_D" -eq 1 ]]; then
        as_root rm -f "$POLICY_RC_D" || true
        OWN_POLICY_RC_D=0
    fi
}
trap restore_service_start EXIT

# ensure_apt PACKAGE BINARY: install apt PACKAGE unless BINARY is already on PATH.
ensure_apt() {
    local package="$1" binary="$2"
    if command -v "$binary" >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        die "$binary not found and apt-get is unavailable: install '$package' (providing $binary) yourself"
    fi
    if ! can_be_root; then
        die "$binary not found: install it with 'sudo apt-get install -y $package' (or rerun as root / with passwordless sudo)"
    fi
    apt_update_once
    log "apt-get install -y $package (for $binary)"
    forbid_service_start
    as_root apt-get install -y -q --no-install-recommends "$package"
    restore_service_start
    hash -r
    command -v "$binary" >/dev/null 2>&1 || die "installed '$package' but $binary is still not on PATH"
}

# ---------------------------------------------------------------------------
# Go-installed tools (into $TOOLS_BIN)                       -- NOT IMPLEMENTED YET
# ---------------------------------------------------------------------------
# Planned: Toxiproxy, pinned to a release tag, built with
#     GOBIN="$TOOLS_BIN" go install github.com/Shopify/toxiproxy/v2/cmd/server@<tag>
# and the resulting "$TOOLS_BIN/server" renamed to "$TOOLS_BIN/toxiproxy-server"
# (skip when toxiproxy-server is already on PATH; require `go`, installable via ensure_apt).
# Add an ensure_go_tool function here and call it from main below.

# ---------------------------------------------------------------------------
# What the project needs
# ---------------------------------------------------------------------------
main() {
    ensure_apt redis-server redis-server
    ensure_apt openssl openssl                     # TLS test certificates
    # ensure_apt prometheus prometheus            # later: metrics tests
    # ensure_go_tool toxiproxy-server ...          # later: fault-injection tests
}

main "$@"
