#!/usr/bin/env bash
# Install the Debian packages that integration tests use, when they are missing:
#   chromium  the real browser the MLflow UI test drives (through playwright)
# Runs as root on CI and on our machines; elsewhere it uses sudo.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v ss >/dev/null || need+=(iproute2)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
echo "installing Debian packages: ${need[*]}"
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
