#!/usr/bin/env bash
# Install the Debian packages that integration tests use, when they are missing.
# Runs as root on CI and on our machines; elsewhere it asks for sudo.
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
