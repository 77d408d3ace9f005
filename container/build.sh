#!/bin/bash
# Build the LoFiHippSeg image (CPU) from this repository, without a container registry:
#   1. a Debian bookworm base made with debootstrap from the APT mirror, imported as
#      localhost/lofihippseg-base:bookworm (skipped when that image exists, or with --base);
#   2. a wheelhouse (container/wheelhouse/: torch 2.13.0 CPU and every dependency) filled on the
#      host with pip (skipped with --no-wheelhouse: the build then fetches them itself);
#   3. `podman build` (or docker) of container/Containerfile, offline (--network none) when the
#      wheelhouse is used.
# With registry access none of this is needed:
#   docker build -f container/Containerfile -t lofihippseg:0.1.0 .
#
# Usage: container/build.sh [--engine podman|docker] [--tag TAG] [--base IMAGE]
#                           [--no-wheelhouse] [--mirror URL] [--archive FILE.tar]
#   --base IMAGE     start from IMAGE (e.g. docker.io/library/debian:bookworm-slim) instead of
#                    making a base with debootstrap (which needs root)
#   --archive FILE   also save the image as a docker archive (for `apptainer build X.sif
#                    docker-archive://FILE`)
# Environment: LOFI_CONTAINER_CACHE (default /tmp/lofi-container: the base's root file system),
#   CONTAINER_BUILD_OPTS (extra options for the build; default for podman on these machines:
#   --runtime runc and low --ulimit values when runc is installed), NICE (default 10).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache=${LOFI_CONTAINER_CACHE:-/tmp/lofi-container}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml" | head -n 1)
engine=""
tag="lofihippseg:$version"
base=""
wheelhouse=1
mirror=""
archive=""
torch_version=2.13.0
torch_index=https://download.pytorch.org/whl/cpu
nice_level=${NICE:-10}

while [ $# -gt 0 ]; do
    case "$1" in
        --engine) engine=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --base) base=$2; shift 2 ;;
        --no-wheelhouse) wheelhouse=0; shift ;;
        --mirror) mirror=$2; shift 2 ;;
        --archive) archive=$2; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (see $0 --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$engine" ]; then
    if command -v podman >/dev/null; then engine=podman
    elif command -v docker >/dev/null; then engine=docker
    else echo "error: neither podman nor docker found (apt-get install podman runc)" >&2; exit 2
    fi
fi
if [ -z "${CONTAINER_BUILD_OPTS+set}" ]; then
    CONTAINER_BUILD_OPTS=""
    if [ "$engine" = podman ] && command -v runc >/dev/null; then
        CONTAINER_BUILD_OPTS="--runtime runc --ulimit nofile=1024:4096 --ulimit nproc=1024:2048"
    fi
fi
read -r -a build_opts <<< "$CONTAINER_BUILD_OPTS"

image_exists() {
    if [ "$engine" = podman ]; then podman image exists "$1"
    else docker image inspect "$1" >/dev/null 2>&1
    fi
}
now() { date +%s.%N; }
took() { python3 -c "print(f'{$(now) - $1:.0f}')"; }
t_all=$(now)

# 1. the base image ----------------------------------------------------------------------------
if [ -z "$base" ]; then
    base=localhost/lofihippseg-base:bookworm
    if image_exists "$base"; then
        echo "base: $base exists, reused"
    else
        t0=$(now)
        if [ -z "$mirror" ]; then
            mirror=$(grep -rhoE '(URIs:|^deb) +https?://[^ ]*debian/?( |$)' \
                /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
                | grep -v security | head -n 1 | awk '{print $2}' || true)
            mirror=${mirror:-http://deb.debian.org/debian}
        fi
        command -v debootstrap >/dev/null || {
            echo "error: debootstrap not found (apt-get install debootstrap), or pass --base" >&2
            exit 2; }
        rootfs="$cache/rootfs-bookworm"
        echo "base: debootstrap bookworm from $mirror into $rootfs"
        rm -rf "$rootfs"
        mkdir -p "$cache"
        nice -n "$nice_level" debootstrap --variant=minbase \
            --include=python3.11,python3.11-venv,python3-distutils \
            bookworm "$rootfs" "$mirror" > "$cache/debootstrap.log" 2>&1 || {
            tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
        # what debian:bookworm-slim leaves out too: APT caches, docs, man pages, locales
        rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
            "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
            "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/debootstrap
        find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
            -exec rm -rf {} +
        tar --numeric-owner -C "$rootfs" -c . | "$engine" import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' - "$base" >/dev/null
        rm -rf "$rootfs"
        echo "base: $base made in $(took "$t0") s"
    fi
fi

# 2. the wheelhouse ----------------------------------------------------------------------------
network=()
if [ "$wheelhouse" = 1 ]; then
    t0=$(now)
    wh="$here/wheelhouse"
    py=${PYTHON:-python3}
    if ! "$py" -c 'import sys, platform; sys.exit(sys.version_info[:2] != (3, 11)
            or platform.machine() != "x86_64" or sys.platform != "linux")'; then
        echo "error: the wheelhouse needs Python 3.11 on Linux x86_64 (PYTHON=...)," \
             "or pass --no-wheelhouse" >&2
        exit 2
    fi
    pip=("$py" -m pip download --quiet --dest "$wh" --only-binary=:all:)
    # torch: the CPU build, from the PyTorch CPU index, else from pip's configured indexes
    if ! ls "$wh"/torch-"$torch_version"+cpu-*.whl >/dev/null 2>&1; then
        "${pip[@]}" --no-deps --retries 0 --timeout 30 --index-url "$torch_index" \
            "torch==$torch_version" 2>/dev/null \
            || "${pip[@]}" --no-deps "torch==$torch_version"
    fi
    if ! ls "$wh"/torch-"$torch_version"+cpu-*.whl >/dev/null 2>&1; then
        echo "error: no CPU wheel of torch $torch_version in $wh (only a CUDA one?)" >&2
        exit 1
    fi
    # the package's dependencies with its [dicom] extra (pydicom, highdicom, dcm2niix: its wheel
    # ships the converter binary), and setuptools/wheel to build it inside the image
    nice -n "$nice_level" "${pip[@]}" --find-links "$wh" "torch==$torch_version" "$repo[dicom]" \
        "setuptools>=68" wheel
    rm -f "$wh"/lofihippseg-*  # the image builds the package from the source, not the host
    echo "wheelhouse: $(find "$wh" -name '*.whl' | wc -l) wheels, $(du -sh "$wh" | cut -f1)," \
         "$(took "$t0") s"
    network=(--network none)
fi

# 3. the image ---------------------------------------------------------------------------------
t0=$(now)
echo "build: $engine build $tag from $base"
(cd "$repo" && nice -n "$nice_level" "$engine" build "${build_opts[@]}" "${network[@]}" \
    --build-arg "BASE=$base" -f container/Containerfile -t "$tag" .)
echo "build: $tag built in $(took "$t0") s"
size=$("$engine" image inspect --format '{{.Size}}' "$tag")
echo "image: $tag, $(python3 -c "print(f'{$size / 1e6:.0f}')") MB; all steps $(took "$t_all") s"

if [ -n "$archive" ]; then
    "$engine" save --format docker-archive -o "$archive" "$tag" 2>/dev/null \
        || "$engine" save -o "$archive" "$tag"
    echo "archive: $archive ($(du -sh "$archive" | cut -f1))"
fi
