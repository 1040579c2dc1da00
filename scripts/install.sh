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
# gcc and libc6-dev compile lmvm-init, the static PID 1 of every sandbox (npm run build);
# util-linux gives unshare, which isolates builds, and mount's loop devices; e2fsprogs makes each
# MicroVM's size-limited disk; nftables decides what sandboxes may reach; conntrack forgets a
# sandbox's tracked connections when its address goes to another sandbox.
# dnsmasq-base is the DNS server of the tests' own "internet" (test/support/test-network.ts).
# tar (GNU, for -S sparse archives) and zstd pack images and checkpoints for the object store
# (lmvm server --object-store, src/objects/archive.ts).
# chromium runs the console's browser tests (driven by playwright-core); awscli (2.x) and
# python3-boto3 are the AWS clients the CLI-compatibility tests drive; postgresql is the
# multi-host store, started by lmvm's tests in their own clusters (the package's own cluster is
# left stopped).
PACKAGES=(python3 make g++ gcc libc6-dev ca-certificates unzip zip curl openssl util-linux e2fsprogs buildah mmdebstrap busybox-static iproute2 nftables conntrack dnsmasq-base chromium awscli python3-boto3 postgresql tar zstd)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  # A policy-rc.d that says no keeps packages (postgresql, nginx) from starting services.
  had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ $had_policy = 1 ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get install -y -q --no-install-recommends "${missing[@]}" || { [ $had_policy = 1 ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
  [ $had_policy = 1 ] || rm -f /usr/sbin/policy-rc.d
else
  echo "already installed: ${PACKAGES[*]}"
fi

step "Installing runsc (gVisor) from Debian 13"
# Debian 12's runsc (20221219) cannot checkpoint a Node.js server; trixie's (20240729) can.
# trixie is added on the same mirror, pinned low so nothing else comes from it.
RUNSC_VERSION=$(runsc --version 2>/dev/null || true)
if [ -z "$RUNSC_VERSION" ] || [[ "$RUNSC_VERSION" == *"0.0~2022"* ]]; then
  MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$MIRROR" ] || MIRROR=$(awk '/^deb .* bookworm/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
  cat >/etc/apt/sources.list.d/lmvm-trixie.sources <<EOT
Types: deb
URIs: $MIRROR
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' >/etc/apt/preferences.d/lmvm-trixie
  apt-get update -q
  apt-get install -y -q --no-install-recommends -t trixie runsc
fi
RUNSC_VERSION=$(runsc --version)
echo "${RUNSC_VERSION%%$'\n'*}"

step "Installing nginx (the proxy benchmark's baseline; not started)"
if ! dpkg -s nginx >/dev/null 2>&1; then
  # A policy-rc.d that says no keeps the package from starting nginx on port 80.
  had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ $had_policy = 1 ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -q && apt-get install -y -q --no-install-recommends nginx || { [ $had_policy = 1 ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
  [ $had_policy = 1 ] || rm -f /usr/sbin/policy-rc.d
else
  echo "already installed: nginx"
fi

step "Installing npm dependencies (npm ci)"
npm ci --no-audit --no-fund

step "Compiling TypeScript"
npm run build --silent

step "Putting lmvm on PATH"
ln -sf "$PWD/bin/lmvm" /usr/local/bin/lmvm
echo "/usr/local/bin/lmvm -> $PWD/bin/lmvm"
