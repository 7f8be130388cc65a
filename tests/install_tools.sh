#!/usr/bin/env bash
# Test tools from Debian's packages, installed where missing (as tests/container/run.sh does for
# its own): dciodvfy, from dicom3tools, validates the DICOM-SEG output independently of highdicom.
# Run by `make test`; the dciodvfy fixture in tests/conftest.py runs it too when pytest is run alone.
set -euo pipefail
command -v dciodvfy >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "dciodvfy is missing: install Debian's dicom3tools package (apt-get install dicom3tools, as root)" >&2
    exit 1
fi
echo "installing dicom3tools (dciodvfy)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null
command -v dciodvfy >/dev/null
