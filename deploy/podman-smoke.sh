#!/usr/bin/env bash
# Build the project image with podman and, unless --build-only, run the pipeline's first steps in it:
# data prep and one short training run on the UCI Adult data (mounted read-only), as the image's
# non-root user, with a read-only root filesystem, no capabilities and no network, writing to a
# mounted output folder. `make image` and `make image-test` call this.
#
# Usage: deploy/podman-smoke.sh [--build-only | --run-only]
# Environment (all optional):
#   MTLP_IMAGE           image reference to build/run (default: python3 pipeline/image.py)
#   BASE_IMAGE           the Dockerfile's base (default: its python:3.11-slim-bookworm; where that
#                        cannot be pulled: localhost/debian-py:bookworm, built with debootstrap if absent)
#   TORCH_INDEX_URL      torch index for the build (CUDA: https://download.pytorch.org/whl/cu128)
#   TORCH_WHEELS_DIR     folder with a torch wheel, mounted read-only into the build (default /opt/wheels
#                        when it holds one); set it empty to download torch from TORCH_INDEX_URL
#   PODMAN_RUNTIME       OCI runtime (default /usr/sbin/runc where present: crun fails in some sandboxes)
#   ADULT_DIR            the raw adult.data/adult.test folder (default ../shared/data/adult)
#   SMOKE_OUT            output folder mounted at /out (default: a new folder under /tmp)
#   SMOKE_MODEL          model for the training run (default mmoe)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
MODE="${1:-all}"
case "$MODE" in all|--build-only|--run-only) ;; *) echo "usage: $0 [--build-only|--run-only]" >&2; exit 64 ;; esac

log() { printf '[podman-smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v podman >/dev/null || die "podman is not installed (Debian: apt-get install -y podman runc)"

# podman's default ulimits fail in unprivileged sandboxes; an empty list is harmless elsewhere.
if [ -z "${CONTAINERS_CONF:-}" ]; then
    CONTAINERS_CONF="$(mktemp /tmp/mtlp-containers.XXXXXX.conf)"
    printf '[containers]\ndefault_ulimits = []\n' > "$CONTAINERS_CONF"
    export CONTAINERS_CONF
fi
RUNTIME_ARGS=()
PODMAN_RUNTIME="${PODMAN_RUNTIME-$( [ -x /usr/sbin/runc ] && echo /usr/sbin/runc || true)}"
[ -n "$PODMAN_RUNTIME" ] && RUNTIME_ARGS=(--runtime "$PODMAN_RUNTIME")

IMAGE="${MTLP_IMAGE:-$(python3 pipeline/image.py)}"
GIT_SHA="$(python3 pipeline/image.py --sha)"
VERSION="$(python3 pipeline/image.py --version)"

LOCAL_BASE=localhost/debian-py:bookworm
DEFAULT_BASE=python:3.11-slim-bookworm

make_local_base() {
    # A Debian bookworm rootfs with Python 3.11 + venv, for machines that cannot pull any image.
    command -v debootstrap >/dev/null || die "cannot pull $DEFAULT_BASE and debootstrap is missing; set BASE_IMAGE"
    [ "$(id -u)" = 0 ] || die "building $LOCAL_BASE with debootstrap needs root; set BASE_IMAGE"
    local mirror tmp
    mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    tmp="$(mktemp -d /tmp/mtlp-base.XXXXXX)"
    trap 'rm -rf "$tmp"' EXIT  # a failed or interrupted debootstrap leaves no root file system behind
    log "building $LOCAL_BASE with debootstrap from $mirror (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$tmp/rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
        || { tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
    tar -C "$tmp/rootfs" -cf "$tmp/base.tar" .
    podman import "$tmp/base.tar" "$LOCAL_BASE" >/dev/null
    rm -rf "$tmp"
    trap - EXIT
}

resolve_base() {
    if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
    if podman image exists "$DEFAULT_BASE" || podman pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
        echo "$DEFAULT_BASE"; return
    fi
    podman image exists "$LOCAL_BASE" || make_local_base
    echo "$LOCAL_BASE"
}

build() {
    local base start build_args=() mounts=()
    base="$(resolve_base)"
    build_args+=(--build-arg "BASE_IMAGE=$base" --build-arg "GIT_SHA=$GIT_SHA" --build-arg "VERSION=$VERSION")
    [ -n "${TORCH_INDEX_URL:-}" ] && build_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
    local wheels="${TORCH_WHEELS_DIR-/opt/wheels}"
    if [ -n "$wheels" ] && compgen -G "$wheels/torch-*.whl" >/dev/null; then
        mounts+=(-v "$wheels:/opt/wheels:ro")
        build_args+=(--build-arg "TORCH_FIND_LINKS=/opt/wheels")
    fi
    # pip inside the build trusts the same CAs as this machine (a TLS-inspecting proxy, for one).
    [ -f /etc/ssl/certs/ca-certificates.crt ] && \
        mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
    if [ -n "$(git status --porcelain -- mtl_models workflow pipeline pyproject.toml 2>/dev/null)" ]; then
        log "WARNING: uncommitted changes in the packaged code: the tag names HEAD ($GIT_SHA), the image holds the working tree"
    fi
    log "building $IMAGE from base $base"
    start=$SECONDS
    podman build "${RUNTIME_ARGS[@]}" --network=host "${mounts[@]}" "${build_args[@]}" \
        -f deploy/Dockerfile -t "$IMAGE" .
    log "built $IMAGE in $((SECONDS - start)) s; size: $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
}

run_in_image() {  # run_in_image NAME CMD...: as the image's user, locked down like the k8s pods
    local name="$1"; shift
    local start=$SECONDS
    log "step $name: $*"
    podman run "${RUNTIME_ARGS[@]}" --rm --network=none --read-only --tmpfs /tmp:rw,size=2g \
        --cap-drop=ALL --security-opt=no-new-privileges \
        -v "$ADULT_DIR:/data/adult:ro" -v "$SMOKE_OUT:/out:rw" \
        "$IMAGE" "$@"
    log "step $name finished in $((SECONDS - start)) s"
}

smoke() {
    ADULT_DIR="${ADULT_DIR:-$REPO/../shared/data/adult}"
    [ -f "$ADULT_DIR/adult.data" ] || die "no adult.data in $ADULT_DIR (set ADULT_DIR)"
    ADULT_DIR="$(cd "$ADULT_DIR" && pwd)"
    SMOKE_OUT="${SMOKE_OUT:-$(mktemp -d /tmp/mtlp-smoke.XXXXXX)}"
    mkdir -p "$SMOKE_OUT"
    SMOKE_OUT="$(cd "$SMOKE_OUT" && pwd)"
    # The image's user (uid 10001) owns the output folder, as a volume's fsGroup would in Kubernetes.
    if [ "$(id -u)" = 0 ]; then chown 10001:10001 "$SMOKE_OUT"; else podman unshare chown 10001:10001 "$SMOKE_OUT"; fi
    podman image exists "$IMAGE" || die "$IMAGE is not built (run without --run-only)"
    log "image $IMAGE, data $ADULT_DIR (read-only), output $SMOKE_OUT"

    local uid
    uid="$(podman run "${RUNTIME_ARGS[@]}" --rm --network=none "$IMAGE" id -u)"
    [ "$uid" != 0 ] || die "the image runs as root"
    log "the image runs as uid $uid"
    run_in_image default-image python -c 'from pipeline.image import default_image; print(default_image())'

    run_in_image prepare python -m workflow.data.prepare --dataset adult --data-dir /data/adult --out /out/prepared
    local model="${SMOKE_MODEL:-mmoe}"
    run_in_image train python -m workflow.training.train --prepared /out/prepared --model "$model" --epochs 1 --out /out/model

    log "outputs (owned by the container's user):"
    (cd "$SMOKE_OUT" && find . -type f -printf '%u %8s  %p\n' | sort -k3) >&2
    [ -n "$(find "$SMOKE_OUT/prepared" -type f 2>/dev/null | head -1)" ] || die "data prep wrote nothing"
    [ -f "$SMOKE_OUT/model/metrics.json" ] || die "training wrote no metrics.json"
    [ -f "$SMOKE_OUT/model/plots/training_curves.png" ] || die "training drew no plots/training_curves.png"
    log "OK: prepare and train ran in $IMAGE as uid $uid"
}

case "$MODE" in
    --build-only) build ;;
    --run-only) smoke ;;
    all) build; smoke ;;
esac
