#!/usr/bin/env bash
# Build recsys-engine's image from deploy/docker/Dockerfile.
#
#   deploy/docker/build.sh [--tag recsys-engine:0.1.0] [--engine auto|docker|buildah]
#                          [--base auto|registry|local]
#
# Engine: a running Docker engine (`docker info` answers), else buildah without a daemon
# (`buildah bud --isolation chroot`, as root or with user namespaces). Bases: the Dockerfile's
# defaults from Docker Hub when it answers ("registry"), else "local" ones made here from
# Debian's mirror with debootstrap (needs root; $DEBIAN_MIRROR, default deb.debian.org) plus
# this machine's Rust toolchain (`rustc --print sysroot`, >= 1.85) copied into the builder.
# Local bases are made once and reused (localhost/recsys-base-{runtime,builder}:bookworm;
# rootfs cache in $RECSYS_IMAGE_CACHE, default var/image-build/). The local bases also trust
# the machine's own extra CAs ($RECSYS_IMAGE_EXTRA_CA, default /usr/local/share/ca-certificates).
#
# Exit 0: the image is built and `recsys-serve --help` ran in it. Otherwise a non-zero exit and
# one line saying what is missing. docs/deploy.md, "The image".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

TAG="recsys-engine:0.1.0"
ENGINE="auto"
BASE="auto"
while (($#)); do
    case "$1" in
        --tag) TAG="$2"; shift 2 ;;
        --engine) ENGINE="$2"; shift 2 ;;
        --base) BASE="$2"; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) printf 'build.sh: unknown argument %s\n' "$1" >&2; exit 2 ;;
    esac
done

CACHE="${RECSYS_IMAGE_CACHE:-$ROOT/var/image-build}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
EXTRA_CA_DIR="${RECSYS_IMAGE_EXTRA_CA:-/usr/local/share/ca-certificates}"
SUITE=bookworm
RUNTIME_BASE="localhost/recsys-base-runtime:$SUITE"
BUILDER_BASE="localhost/recsys-base-builder:$SUITE"
MIN_RUST="1.85"

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] CANNOT BUILD: %s\n' "$*" >&2; exit 1; }

# --- engine ------------------------------------------------------------------------------
docker_ok() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }
buildah_ok() { command -v buildah >/dev/null 2>&1 && buildah info >/dev/null 2>&1; }
case "$ENGINE" in
    auto)
        if docker_ok; then ENGINE=docker
        elif buildah_ok; then ENGINE=buildah
        else
            die "no image builder: no Docker engine answers ('docker info' fails: no daemon)" \
                "and buildah is not usable (install it: apt-get install buildah; it needs root" \
                "or user namespaces)"
        fi ;;
    docker) docker_ok || die "--engine docker: 'docker info' fails (no Docker engine running)" ;;
    buildah) buildah_ok || die "--engine buildah: 'buildah info' fails (not installed, or" \
        "neither root nor user namespaces)" ;;
    *) die "--engine must be auto, docker or buildah" ;;
esac
log "engine: $ENGINE"

# --- bases -------------------------------------------------------------------------------
registry_ok() {
    # Docker Hub's registry answers 401 (auth needed) when reachable.
    local code
    code="$(curl -s -o /dev/null -m 10 -w '%{http_code}' https://registry-1.docker.io/v2/ || true)"
    [[ $code == 401 || $code == 200 ]]
}
if [[ $BASE == auto ]]; then
    if registry_ok; then BASE=registry; else BASE=local; fi
fi

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

make_local_bases() {
    [[ $ENGINE == buildah ]] || die "--base local is made with buildah (use --engine buildah)"
    [[ $(id -u) == 0 ]] || die "local bases need root (debootstrap and a chroot)"
    command -v debootstrap >/dev/null 2>&1 ||
        die "local bases need debootstrap (apt-get install debootstrap)"
    mkdir -p "$CACHE"
    if ! image_exists "$RUNTIME_BASE"; then
        local rootfs="$CACHE/rootfs-runtime"
        if [[ ! -x $rootfs/usr/bin/python3 ]]; then
            log "runtime base: debootstrap $SUITE from $MIRROR (python3, venv)"
            rm -rf "$rootfs"
            debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
                "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
                die "debootstrap from $MIRROR failed (see $CACHE/debootstrap.log)"
            rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        fi
        tar -C "$rootfs" -cf "$CACHE/rootfs-runtime.tar" .
        local ctr
        ctr="$(buildah from scratch)"
        buildah add "$ctr" "$CACHE/rootfs-runtime.tar" / >/dev/null
        # Behind a TLS-intercepting proxy pip and cargo need the CAs this machine trusts
        # beyond Debian's (update-ca-certificates' local ones); they go into the local bases.
        local extra=("$EXTRA_CA_DIR"/*.crt)
        if [[ -e ${extra[0]} ]]; then
            log "runtime base: adding ${#extra[@]} local CA certificate(s) from $EXTRA_CA_DIR"
            buildah copy "$ctr" "${extra[@]}" /usr/local/share/ca-certificates/ >/dev/null
            buildah run --isolation chroot "$ctr" -- update-ca-certificates >/dev/null
        fi
        buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --env LANG=C.UTF-8 --cmd /bin/bash "$ctr"
        buildah commit --rm "$ctr" "$RUNTIME_BASE" >/dev/null
        rm -f "$CACHE/rootfs-runtime.tar"
        log "runtime base: $RUNTIME_BASE"
    fi
    if ! image_exists "$BUILDER_BASE"; then
        command -v rustc >/dev/null 2>&1 || die "the local builder base copies this machine's" \
            "Rust toolchain, and rustc is not on PATH"
        local sysroot version
        sysroot="$(rustc --print sysroot)"
        version="$(rustc --version | cut -d' ' -f2)"
        if [[ "$(printf '%s\n%s\n' "$MIN_RUST" "$version" | sort -V | head -1)" != "$MIN_RUST" ]]
        then
            die "rustc $version is older than $MIN_RUST (core_rs's rust-version)"
        fi
        log "builder base: $RUNTIME_BASE + gcc from $MIRROR + rustc $version from $sysroot"
        local ctr
        ctr="$(buildah from "$RUNTIME_BASE")"
        buildah run --isolation chroot "$ctr" -- sh -c \
            "printf 'deb $MIRROR $SUITE main\n' > /etc/apt/sources.list \
             && apt-get update -q && apt-get install -y -q --no-install-recommends gcc libc6-dev \
             && rm -rf /var/lib/apt/lists/*" >"$CACHE/builder-apt.log" 2>&1 ||
            die "apt-get in the builder base failed (see $CACHE/builder-apt.log)"
        buildah copy "$ctr" "$sysroot/bin/rustc" "$sysroot/bin/cargo" /usr/local/rust/bin/ >/dev/null
        buildah copy "$ctr" "$sysroot/lib" /usr/local/rust/lib >/dev/null
        buildah run --isolation chroot "$ctr" -- rm -rf /usr/local/rust/lib/rustlib/src \
            /usr/local/rust/lib/rustlib/rustc-src
        buildah config --env PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --env CARGO_HOME=/usr/local/cargo "$ctr"
        buildah commit --rm "$ctr" "$BUILDER_BASE" >/dev/null
        log "builder base: $BUILDER_BASE"
    fi
}

args=(-f deploy/docker/Dockerfile -t "$TAG")
if [[ $BASE == local ]]; then
    make_local_bases
    args+=(--build-arg "BUILDER_IMAGE=$BUILDER_BASE" --build-arg "RUNTIME_IMAGE=$RUNTIME_BASE")
elif [[ $BASE != registry ]]; then
    die "--base must be auto, registry or local"
fi
log "building $TAG (bases: $BASE)"

if [[ $ENGINE == docker ]]; then
    docker build "${args[@]}" . || die "docker build failed (output above)"
    docker run --rm "$TAG" --help >/dev/null || die "recsys-serve --help failed in $TAG"
else
    pull=()
    [[ $BASE == local ]] && pull=(--pull=never)
    buildah bud --isolation chroot --layers "${pull[@]}" "${args[@]}" . ||
        die "buildah bud failed (output above)"
    ctr="$(buildah from --pull=never "$TAG")"
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    buildah run --isolation chroot --user 10001:10001 "$ctr" -- recsys-serve --help >/dev/null ||
        die "recsys-serve --help failed in $TAG"
fi
log "built $TAG; recsys-serve --help runs in it"
