#!/bin/sh
# A Debian bookworm base image made from Debian's own packages, for building
# docker/Dockerfile where Docker Hub cannot be reached:
#   docker/debian-base.sh sbc-base:bookworm [MIRROR]
#   docker build --network host --build-arg BASE_IMAGE=sbc-base:bookworm \
#       -f docker/Dockerfile -t sbc .
# It holds Debian's python3 (3.11) with venv, and apt pointed at MIRROR: the
# Dockerfile's build stage installs its compiler from there.  MIRROR defaults
# to the Debian mirror this machine's apt uses.  Nothing is done when the image
# already exists (delete it with `docker image rm` to make it again).
# Needs root, debootstrap and a running Docker engine.
set -eu
name=${1:?usage: debian-base.sh IMAGE [MIRROR]}
mirror=${2:-}
suite=bookworm

if docker image inspect "$name" >/dev/null 2>&1; then
    echo "debian-base: $name exists"
    exit 0
fi
if [ -z "$mirror" ]; then
    # The repository apt fetches bookworm's main component from.
    mirror=$(apt-get indextargets --format '$(RELEASE) $(COMPONENT) $(REPO_URI)' 'Created-By: Packages' 2>/dev/null \
        | awk -v s="$suite" '$1 == s && $2 == "main" { print $3; exit }')
    mirror=${mirror:-http://deb.debian.org/debian/}
fi
root=$(mktemp -d "${TMPDIR:-/tmp}/sbc-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
echo "debian-base: debootstrap $suite from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1
}
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase $suite from $mirror" - "$name" >/dev/null
echo "debian-base: made $name"
