#!/usr/bin/env bash
# Installs what lmvm needs on Debian 12 (as root): system packages, npm
# dependencies, the compiled project, and `lmvm` on PATH. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "Checking Node.js (20 or newer)"
if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "lmvm needs Node.js 20 or newer with npm; found: $(node --version 2>/dev/null || echo none)." >&2
  echo "Install Node.js 20 (for example from your distribution's backports or a vendor package), then re-run." >&2
  exit 1
fi
node --version

step "Installing system packages"
export DEBIAN_FRONTEND=noninteractive
# python3, make and g++ build better-sqlite3 when no prebuilt binary can be downloaded.
# buildah builds Dockerfiles; mmdebstrap and busybox-static make the managed base images;
# util-linux gives unshare, which isolates builds.
PACKAGES=(python3 make g++ ca-certificates unzip zip curl openssl util-linux buildah mmdebstrap busybox-static)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "already installed: ${PACKAGES[*]}"
fi

step "Installing npm dependencies (npm ci)"
npm ci --no-audit --no-fund

step "Compiling TypeScript"
npm run build --silent

step "Putting lmvm on PATH"
ln -sf "$PWD/bin/lmvm" /usr/local/bin/lmvm
echo "/usr/local/bin/lmvm -> $PWD/bin/lmvm"
