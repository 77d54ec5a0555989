#!/usr/bin/env bash
# Build the tiltflow image with podman (what `make image` runs); prints the image size and build time.
#   containers/build-image.sh IMAGE BASE_IMAGE
# BASE_IMAGE localhost/debian-bookworm:min is made here with debootstrap when missing (no image registry is
# reachable from CI) and reused afterwards; any other base is pulled by podman as usual.
# The image gets the tests' environment: `pip download` puts torch (pinned by constraints.txt; a local wheel
# from PIP_FIND_LINKS such as /opt/wheels when there is one, PyPI's build otherwise) and the versions of every
# dependency the tests' venv holds (pip freeze) into containers/tiltflow/wheels/, from which the build
# installs offline (PIP_NO_INDEX=1): the host's pip settings (proxy, certificates, cache) do the downloads.
set -euo pipefail
image=${1:?image name}
base=${2:?base image}
cd "$(dirname "$0")/.."
tools=${TOOLS:-.tools}
python=${PYTHON:-.venv/bin/python}
start=$(date +%s)

if [[ $base == localhost/debian-bookworm:min ]] && ! podman image exists "$base"; then
    echo "== base image $base: debootstrap --variant=minbase bookworm"
    rootfs="$tools/rootfs-bookworm"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
        > "$tools/debootstrap.log" 2>&1 || { tail -5 "$tools/debootstrap.log"; exit 1; }
    tar -C "$rootfs" -c . | podman import - "$base"
    rm -rf "$rootfs"
    echo "== base image made in $(($(date +%s) - start)) s"
fi

echo "== wheels of the tests' environment into containers/tiltflow/wheels"
"$python" -m pip freeze --exclude-editable > "$tools/image-constraints.txt"
"$python" -c 'from importlib.metadata import requires; print("\n".join(r for r in requires("tiltflow") if "extra" not in r))' \
    > "$tools/image-requirements.txt"
# python 3.11: Debian bookworm's python3; setuptools and wheel: the build backend pyproject.toml names
"$python" -m pip download -q -c constraints.txt -c "$tools/image-constraints.txt" --python-version 3.11 \
    --only-binary=:all: -d containers/tiltflow/wheels -r "$tools/image-requirements.txt" "setuptools>=68" wheel

echo "== wheels ready after $(($(date +%s) - start)) s"
echo "== podman build $image (base $base)"
podman build --network host --build-arg BASE_IMAGE="$base" --build-arg PIP_NO_INDEX=1 -f containers/tiltflow/Dockerfile -t "$image" .

size=$(podman image inspect --format '{{.Size}}' "$image")
echo "== image $image: $((size / 1000000)) MB, built in $(($(date +%s) - start)) s"
