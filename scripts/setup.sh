#!/usr/bin/env bash
# The quick start: installs lmvm, starts `lmvm server` in the background, and
# runs the platform's main job on the example app, showing each step.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh

DATA_DIR="${LMVM_DATA_DIR:-/var/lib/lmvm}"
export LMVM_DATA_DIR="$DATA_DIR"
step() { printf '\n==> %s\n' "$*"; }

step "Starting lmvm server (data directory $DATA_DIR)"
mkdir -p "$DATA_DIR"
if curl -fsS http://127.0.0.1:7600/health >/dev/null 2>&1; then
  echo "already running"
else
  nohup lmvm server --data-dir "$DATA_DIR" >>"$DATA_DIR/server.log" 2>&1 &
  for _ in $(seq 1 100); do
    curl -fsS http://127.0.0.1:7600/health >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS http://127.0.0.1:7600/health >/dev/null || { echo "lmvm server did not start; see $DATA_DIR/server.log" >&2; tail -n 20 "$DATA_DIR/server.log" >&2; exit 1; }
  echo "listening on http://127.0.0.1:7600 (log: $DATA_DIR/server.log)"
fi

step "Packaging examples/hello as a code artifact"
ARTIFACT="$DATA_DIR/examples/hello.zip"
mkdir -p "$(dirname "$ARTIFACT")"
rm -f "$ARTIFACT"
(cd examples/hello && zip -qr "$ARTIFACT" .)
echo "$ARTIFACT"

step "Managed base images"
lmvm list-managed-microvm-images --query 'items[].imageArn' --output text

step "Creating the MicroVM image 'hello' (lmvm create-microvm-image ...)"
IMAGE_FLAGS=(--base-image-arn arn:aws:lambda:us-east-1:aws:microvm-image:debian12
  --build-role-arn arn:aws:iam::000000000000:role/MicroVMBuildRole
  --code-artifact "{\"uri\":\"file://$ARTIFACT\"}"
  --hooks "$(node -p 'JSON.stringify(require("./examples/hello/microvm-image.json").hooks)')")
if lmvm get-microvm-image --image-identifier hello >/dev/null 2>&1; then
  VERSION=$(lmvm update-microvm-image --image-identifier hello "${IMAGE_FLAGS[@]}" --query imageVersion --output text)
else
  VERSION=$(lmvm create-microvm-image --name hello "${IMAGE_FLAGS[@]}" --query imageVersion --output text)
fi

step "Building version $VERSION (the first build also makes the debian12 base image)"
lmvm logs build hello "$VERSION" --follow

step "The image"
lmvm get-microvm-image --image-identifier hello
lmvm list-microvm-image-builds --image-identifier hello --image-version "$VERSION" --output table

step "Running a MicroVM from the snapshot (lmvm run-microvm ...)"
IMAGE_ARN=$(lmvm get-microvm-image --image-identifier hello --query imageArn --output text)
ID=$(lmvm run-microvm --image-identifier "$IMAGE_ARN" \
  --ingress-network-connectors arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS \
    arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:SHELL_INGRESS \
  --query microvmId --output text)
lmvm wait microvm-running --microvm-identifier "$ID" || { lmvm get-microvm --microvm-identifier "$ID"; exit 1; }
STATE=$(lmvm get-microvm --microvm-identifier "$ID" --query state --output text)
echo "$ID is $STATE"
[ "$STATE" = RUNNING ] || { lmvm get-microvm --microvm-identifier "$ID"; exit 1; }

step "Calling its endpoint with an auth token (curl)"
ENDPOINT=$(lmvm get-microvm --microvm-identifier "$ID" --query endpoint --output text)
TOKEN=$(lmvm create-microvm-auth-token --microvm-identifier "$ID" --expiration-in-minutes 60 \
  --allowed-ports port=8080 --query 'authToken."X-aws-proxy-auth"' --output text)
PORT=${ENDPOINT##*:}
echo "curl --cacert $DATA_DIR/tls/ca.pem --connect-to ::127.0.0.1:$PORT -H \"X-aws-proxy-auth: \$TOKEN\" $ENDPOINT/"
curl -sS --cacert "$DATA_DIR/tls/ca.pem" --connect-to "::127.0.0.1:$PORT" -H "X-aws-proxy-auth: $TOKEN" "$ENDPOINT/"
echo

step "Done"
cat <<EOT
lmvm server is running in the background, and MicroVM $ID with it. Try:
  lmvm exec $ID -- uname -a
  lmvm shell $ID
  lmvm suspend-microvm --microvm-identifier $ID
  lmvm terminate-microvm --microvm-identifier $ID
  lmvm help
Stop it with: kill $(node -p "require('$DATA_DIR/server.json').pid")
EOT
