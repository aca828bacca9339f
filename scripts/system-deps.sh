#!/usr/bin/env bash
# Install the Debian packages that integration tests use, when they are missing:
#   chromium    the real browser the MLflow UI test drives (through playwright)
#   postgresql  the server behind shared sweeps and the tracking-server tests (started by
#               the tests themselves on 127.0.0.1 with their own data directory)
#   iproute2    `ss`, to check what a server binds to
# Runs as root on CI and on our machines; elsewhere it uses sudo.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v ss >/dev/null || need+=(iproute2)
command -v runuser >/dev/null || need+=(util-linux)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
echo "installing Debian packages: ${need[*]}"
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
