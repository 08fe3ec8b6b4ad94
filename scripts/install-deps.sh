#!/usr/bin/env bash
# Install the system servers the tests and the demo need, if they are missing.
#
# Idempotent: a tool already on PATH is left alone, so a second run does nothing.
# apt packages are installed as root, or through `sudo` when it works without a
# password; otherwise this prints what to install and exits non-zero.
# Servers are never started here (the tests and the demo start their own).
# Go programs (toxiproxy-server) are built from a pinned tag into .tools/bin (gitignored),
# with go's default GOPATH/GOCACHE; a Go that is missing or too old is provided first.
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
# Go-installed tools (into $TOOLS_BIN)
# ---------------------------------------------------------------------------
# Toxiproxy (fault-injection tests): v2.12.0 (2025-03) is its newest release that the Go
# module proxy serves (`go list -m -versions` shows only v2.3.0 and v2.5.0, but exact tags up
# to v2.12.0 are served; v2.13.0 is not). Its go.mod needs Go >= 1.23.
TOXIPROXY_MODULE=github.com/Shopify/toxiproxy/v2
TOXIPROXY_VERSION=v2.12.0
TOXIPROXY_MIN_GO=23
# When the local `go` is older than a tool needs (Debian 12's golang-go is 1.19), this
# official toolchain is fetched as a Go module (golang.org/toolchain) and used instead.
GO_FALLBACK_TOOLCHAIN=go1.26.8

# go_minor GO: print the minor version of a go command (go1.23.4 -> 23).
go_minor() {
    local version
    version="$("$1" env GOVERSION 2>/dev/null)" || return 1
    [[ "$version" =~ ^go1\.([0-9]+) ]] || return 1
    printf '%s\n' "${BASH_REMATCH[1]}"
}

# ensure_go MIN_MINOR: set GO to a go command of version 1.MIN_MINOR or newer.
ensure_go() {
    local min="$1" have dir
    ensure_apt golang-go go
    # Without HOME, go has no default cache or GOPATH: keep them in .tools (gitignored).
    if [[ -z "${HOME:-}" ]]; then
        export GOPATH="${GOPATH:-$ROOT/.tools/gopath}" GOCACHE="${GOCACHE:-$ROOT/.tools/gocache}"
    fi
    GO="$(command -v go)"
    have="$(go_minor "$GO")" || die "cannot tell the version of $GO"
    if (( have >= min )); then
        return 0
    fi
    local toolchain
    toolchain="golang.org/toolchain@v0.0.1-$GO_FALLBACK_TOOLCHAIN.$("$GO" env GOOS)-$("$GO" env GOARCH)"
    log "go 1.$have is older than 1.$min: fetching $toolchain"
    mkdir -p "$TOOLS_BIN"
    dir="$(cd "$TOOLS_BIN" && GOTOOLCHAIN=local "$GO" mod download -json "$toolchain" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -n "$dir" && -f "$dir/bin/go" ]] || die "could not fetch $toolchain"
    # Module zips carry no file modes: make the toolchain's programs executable.
    chmod u+x "$dir"/bin/* "$dir"/pkg/tool/*/*
    GO="$dir/bin/go"
    unset GOROOT   # a GOROOT set for the old go would mislead the new one
}

# ensure_go_tool BINARY PACKAGE VERSION MIN_GO_MINOR [LDFLAGS]: unless BINARY is on PATH,
# build the Go main PACKAGE at VERSION with `go install` and put it in $TOOLS_BIN as BINARY
# (go names it after the package's last path element, e.g. "server"). A BINARY of our own in
# $TOOLS_BIN whose `-version` does not name VERSION is rebuilt (the pin was moved).
ensure_go_tool() {
    local binary="$1" package="$2" version="$3" min_go="$4" ldflags="${5:-}" found
    if found="$(command -v "$binary")"; then
        if [[ "$found" != "$TOOLS_BIN/$binary" ]] \
            || [[ "$("$found" -version 2>&1 || true)" == *"${version#v}"* ]]; then
            return 0
        fi
        log "$found is not $version: rebuilding it"
    fi
    ensure_go "$min_go"
    mkdir -p "$TOOLS_BIN"
    # Build into a scratch GOBIN so no half-built or generically named file lands on PATH.
    local gobin start=$SECONDS
    gobin="$(mktemp -d "$ROOT/.tools/gobin.XXXXXX")"
    log "go install $package@$version (as $binary)"
    if ! GOBIN="$gobin" GOTOOLCHAIN=local "$GO" install -ldflags="$ldflags" "$package@$version"; then
        rm -rf "$gobin"
        die "go install $package@$version failed"
    fi
    mv -f "$gobin/${package##*/}" "$TOOLS_BIN/$binary"
    rm -rf "$gobin"
    hash -r
    log "installed $TOOLS_BIN/$binary in $((SECONDS - start))s: $("$TOOLS_BIN/$binary" -version 2>&1 || true)"
}

# ---------------------------------------------------------------------------
# More server versions (`make test-servers`), unpacked into .tools/servers: nothing system-wide
# ---------------------------------------------------------------------------
# Valkey 8.0 from Debian 12's backports: the package is fetched and unpacked, no apt source is
# added. Pinned by version and SHA-256 (amd64). When the archive has moved on (backports keep
# one version) or on another architecture, the newest valkey-tools is taken from the backports
# index instead, checked as apt checks it: the index against the Release file, the Release file
# against Debian's archive key (gpgv).
DEBIAN_MIRROR=http://deb.debian.org/debian
VALKEY_SUITE=bookworm-backports
VALKEY_DEB_VERSION=8.0.1+dfsg1-1~bpo12+1
VALKEY_DEB_SHA256_amd64=d2c2ea67642fa9571a07138b80ae52ebe566311c952aef25a39c1d5050697853
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SERVERS_DIR="$ROOT/.tools/servers"

# fetch URL FILE [SHA256]: download URL to FILE; with SHA256, fail unless it matches.
fetch() {
    local url="$1" file="$2" sha="${3:-}"
    curl -fsSL --retry 3 -o "$file" "$url" || return 1
    [[ -z "$sha" ]] || echo "$sha  $file" | sha256sum --check --quiet --status
}

# valkey_from_index ARCH DIR: fetch the newest valkey-tools of $VALKEY_SUITE into DIR/v.deb.
valkey_from_index() {
    local arch="$1" dir="$2" index="main/binary-$1/Packages.xz" sha
    ensure_apt gpgv gpgv
    ensure_apt xz-utils xz
    [[ -r "$DEBIAN_KEYRING" ]] || die "no $DEBIAN_KEYRING (package debian-archive-keyring)"
    fetch "$DEBIAN_MIRROR/dists/$VALKEY_SUITE/InRelease" "$dir/InRelease" \
        || die "cannot fetch $VALKEY_SUITE's InRelease"
    gpgv --quiet --keyring "$DEBIAN_KEYRING" --output "$dir/Release" "$dir/InRelease" 2>/dev/null \
        || die "$VALKEY_SUITE's InRelease is not signed by Debian's archive key"
    sha="$(awk -v f="$index" '/^[A-Za-z0-9]+:/ {s = ($1 == "SHA256:")} s && $3 == f {print $1}' \
        "$dir/Release")"
    [[ -n "$sha" ]] || die "$VALKEY_SUITE's Release file lists no $index"
    fetch "$DEBIAN_MIRROR/dists/$VALKEY_SUITE/$index" "$dir/Packages.xz" "$sha" \
        || die "$VALKEY_SUITE's $index does not match its Release file"
    local file="" sha=""
    read -r file sha < <(xz -dc "$dir/Packages.xz" | awk '
        /^Package: / {p = ($2 == "valkey-tools")} p && /^Filename: / {f = $2}
        p && /^SHA256: / {print f, $2; exit}') || true
    [[ -n "$file" && -n "$sha" ]] || die "$VALKEY_SUITE has no valkey-tools for $arch"
    log "valkey-tools from $VALKEY_SUITE's index: ${file##*/}"
    fetch "$DEBIAN_MIRROR/$file" "$dir/v.deb" "$sha" || die "${file##*/} does not match the index"
}

# ensure_valkey: $SERVERS_DIR/valkey/valkey-server, unless the one there starts and came from
# the pinned package (one taken from the index stays until the pin is moved).
ensure_valkey() {
    local dest="$SERVERS_DIR/valkey" arch pinned source tmp
    if [[ -x "$dest/valkey-server" ]] && "$dest/valkey-server" --version >/dev/null 2>&1 \
        && [[ "$(cat "$dest/SOURCE" 2>/dev/null)" == *" $VALKEY_DEB_VERSION" \
              || "$(cat "$dest/SOURCE" 2>/dev/null)" == index* ]]; then
        return 0
    fi
    command -v dpkg-deb >/dev/null 2>&1 || die "valkey: needs dpkg-deb (Debian/Ubuntu)"
    arch="$(dpkg --print-architecture)"
    tmp="$(mktemp -d)"
    VALKEY_TMP="$tmp"  # removed on exit, a failure's too
    trap 'rm -rf "${VALKEY_TMP:-}"; restore_service_start' EXIT
    pinned="VALKEY_DEB_SHA256_$arch"
    if [[ -n "${!pinned:-}" ]] && fetch \
        "$DEBIAN_MIRROR/pool/main/v/valkey/valkey-tools_${VALKEY_DEB_VERSION}_$arch.deb" \
        "$tmp/v.deb" "${!pinned}"; then
        source="pinned $VALKEY_DEB_VERSION"
    else
        [[ -z "${!pinned:-}" ]] || log "warning: valkey-tools $VALKEY_DEB_VERSION is gone from \
the archive or does not match its pin: taking the newest from $VALKEY_SUITE's index"
        valkey_from_index "$arch" "$tmp"
        source="index $(dpkg-deb --field "$tmp/v.deb" Version)"
    fi
    log "valkey-tools: $source"
    dpkg-deb -x "$tmp/v.deb" "$tmp/x"
    rm -rf "$dest" && mkdir -p "$dest"
    # one program for every role, named by argv[0]: Debian's valkey-server links it too
    cp "$tmp/x/usr/bin/valkey-check-rdb" "$dest/valkey-server"
    "$dest/valkey-server" --version >/dev/null 2>&1 || die "$dest/valkey-server does not start: \
$(ldd "$dest/valkey-server" | grep 'not found' || true) (install libjemalloc2 liblzf1)"
    echo "$source" > "$dest/SOURCE"
    rm -rf "$tmp"
    log "installed $dest/valkey-server: $("$dest/valkey-server" --version)"
}

# ---------------------------------------------------------------------------
# What the project needs
# ---------------------------------------------------------------------------
main() {
    if [[ "${1:-}" == "--servers" ]]; then  # make servers: the other server versions
        ensure_apt redis-server redis-server  # Valkey's libraries come with redis-tools
        ensure_valkey
        return 0
    fi
    ensure_apt redis-server redis-server
    ensure_apt openssl openssl                     # TLS test certificates
    ensure_apt prometheus prometheus               # prometheus + promtool: dashboard and alert tests
    ensure_apt prometheus-redis-exporter prometheus-redis-exporter  # the Redis panels, end to end
    ensure_go_tool toxiproxy-server "$TOXIPROXY_MODULE/cmd/server" "$TOXIPROXY_VERSION" \
        "$TOXIPROXY_MIN_GO" "-s -w -X $TOXIPROXY_MODULE.Version=${TOXIPROXY_VERSION#v}"
}

main "$@"
