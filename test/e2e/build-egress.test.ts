// Builds and the network (issue 13): an image's egressNetworkConnectors decide
// what its Dockerfile's RUN steps and its snapshot boot may reach. With
// INTERNET_EGRESS, Python, Node and bash RUN steps fetch from the test internet
// by name (through the resolver at 169.254.169.253, which asks the test DNS
// server) and by address, and what they fetched is in the image; the app's
// snapshot boot reaches it too. Without connectors, RUN steps have no network
// and the build fails saying so and naming INTERNET_EGRESS. Every build's
// namespace is gone when it ends, however it ends. One server, one test
// internet, five builds on lmvm/debian12.

import assert from "node:assert/strict";
import { lookup } from "node:dns/promises";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, DeleteMicrovmImageCommand, GetMicrovmImageBuildCommand, GetMicrovmImageVersionCommand, ListMicrovmImageBuildsCommand,
} from "@aws-sdk/client-lambda-microvms";
import { BASE_IMAGE_CACHE, makeZip } from "../support/artifacts.js";
import { ROLE } from "../support/builds.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { startTestNetwork, type TestNetwork } from "../support/test-network.js";

const DEBIAN12 = "arn:aws:lambda:us-east-1:aws:microvm-image:debian12";
const INTERNET_EGRESS = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:INTERNET_EGRESS";

const FETCH_PY = `import sys, urllib.request
url, out = sys.argv[1], sys.argv[2]
body = urllib.request.urlopen(url, timeout=20).read()
open(out, "wb").write(body)
print("python fetched", url, "->", body.decode().strip(), flush=True)
`;

const FETCH_JS = `const http = require("node:http");
const fs = require("node:fs");
const [url, out] = process.argv.slice(2);
const req = http.get(url, { timeout: 20000 }, (res) => {
  const chunks = [];
  res.on("data", (c) => chunks.push(c));
  res.on("end", () => {
    const body = Buffer.concat(chunks);
    fs.writeFileSync(out, body);
    console.log("node fetched", url, "->", body.toString().trim());
  });
});
req.on("timeout", () => req.destroy(new Error("timed out")));
req.on("error", (err) => {
  console.error("node could not fetch", url + ":", err.message);
  process.exit(1);
});
`;

// bash's /dev/tcp resolves the name with getaddrinfo, like any libc client.
const FETCH_SH = `#!/bin/bash
set -euo pipefail
host=$1 path=$2 out=$3
exec 3<>"/dev/tcp/$host/80"
printf 'GET %s HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n' "$path" "$host" >&3
cat <&3 > "$out"
echo "bash fetched $host$path -> $(tail -n 1 "$out")"
`;

// The app fetches from the test internet while the build boots it for its snapshot.
const APP_PY = `import http.server, sys, urllib.request
try:
    print("boot fetch:", urllib.request.urlopen(sys.argv[1], timeout=10).read().decode().strip(), flush=True)
except Exception as err:
    print("boot fetch failed:", err, flush=True)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
http.server.HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
`;

describe("Builds and the network", { timeout: 1_800_000 }, () => {
  let net: TestNetwork;
  let t: TestPlatform;
  const dir = tempDir("lmvm-build-egress-");

  before(async () => {
    net = await startTestNetwork();
    t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE, dnsResolvers: net.resolvers });
  });
  after(async () => {
    await t?.stop();
    await net?.close();
  });

  async function build(name: string, dockerfile: string, egress: string[], files: { name: string; content: string }[] = []) {
    const file = join(dir, `${name}.zip`);
    writeFileSync(file, makeZip([{ name: "Dockerfile", content: dockerfile }, ...files]));
    await t.client.send(new CreateMicrovmImageCommand({
      name, baseImageArn: DEBIAN12, buildRoleArn: ROLE, codeArtifact: { uri: `file://${file}` }, ...(egress.length ? { egressNetworkConnectors: egress } : {}),
    }));
    const version = await eventually(async () => {
      const v = await t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: name, imageVersion: "1.0" }));
      return v.state === "SUCCESSFUL" || v.state === "FAILED" ? v : undefined;
    }, `build of ${name}`, 900_000);
    const id = (await t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: name, imageVersion: "1.0" }))).items![0]!.buildId!;
    const b = await t.client.send(new GetMicrovmImageBuildCommand({ imageIdentifier: name, imageVersion: "1.0", buildId: id }));
    return { version, build: b, log: readFileSync(join(t.dataDir, "logs", "builds", `${id}.log`), "utf8") };
  }

  /** The build namespaces this server owns, and any of its namespaces still on the host. */
  const buildNamespaces = () => {
    const owned = join(t.dataDir, "build-networks");
    return existsSync(owned) ? readdirSync(owned) : [];
  };
  const rootfs = (name: string) => join(t.dataDir, "images", name, "1.0", "X86_64", "rootfs");
  const scripts = [
    { name: "fetch.py", content: FETCH_PY },
    { name: "fetch.js", content: FETCH_JS },
    { name: "fetch.sh", content: FETCH_SH },
    { name: "app.py", content: APP_PY },
  ];

  test("with INTERNET_EGRESS, Python, Node and bash RUN steps fetch from the test internet by name and by address, and the snapshot boot reaches it", async () => {
    const { webName, webAddress, hostAddress } = net.internet;
    const byName = (path: string) => `http://${webName}${path}`;
    const byAddress = (path: string) => `http://${webAddress}${path}`;
    const dockerfile = [
      "FROM lmvm/debian12",
      "COPY . /src",
      "RUN cat /etc/resolv.conf",
      `RUN python3 /src/fetch.py ${byName("/python-by-name")} /python-by-name.txt && python3 /src/fetch.py ${byAddress("/python-by-address")} /python-by-address.txt`,
      `RUN node /src/fetch.js ${byName("/node-by-name")} /node-by-name.txt && node /src/fetch.js ${byAddress("/node-by-address")} /node-by-address.txt`,
      `RUN bash /src/fetch.sh ${webName} /bash-by-name /bash-by-name.txt`,
      `CMD ["python3", "/src/app.py", "${byName("/snapshot-boot")}"]`,
    ].join("\n");
    const { version, log } = await build("egress-fetch", dockerfile, [INTERNET_EGRESS], scripts);
    assert.equal(version.state, "SUCCESSFUL", `${version.stateReason}\n${log}\nDNS queries the test DNS server got: ${JSON.stringify(net.dnsQueries())}`);
    assert.match(log, /RUN steps reach the internet \(public IPv4 over TCP\) and DNS through 169\.254\.169\.253/);
    assert.match(log, /^.*nameserver 169\.254\.169\.253$/m, "RUN steps resolve through the sandbox resolver");
    // What the RUN steps fetched is in the image, and the test internet saw each request come from the host's NAT address.
    for (const file of ["python-by-name", "python-by-address", "node-by-name", "node-by-address", "bash-by-name"]) {
      assert.match(readFileSync(join(rootfs("egress-fetch"), `${file}.txt`), "utf8"), new RegExp(`hello from the test internet \\(${webAddress.replace(/\./g, "\\.")}\\); you are ${hostAddress.replace(/\./g, "\\.")}`), file);
      assert.match(log, new RegExp(`fetched \\S*${file} -> hello from the test internet`), `${file} in the build log`);
    }
    const paths = net.requests().map((r) => r.url);
    for (const p of ["/python-by-name", "/python-by-address", "/node-by-name", "/node-by-address", "/bash-by-name", "/snapshot-boot"]) assert.ok(paths.includes(p), `the test internet got ${p} (got ${paths.join(", ")})`);
    assert.ok(net.requests().every((r) => r.remote === hostAddress), "every request came through the host's NAT");
    assert.ok(net.dnsQueries().some((q) => q.name === webName), "the name was resolved by the test DNS server, through lmvm's resolver");
    assert.deepEqual(buildNamespaces(), [], "the build's namespace is gone");
  });

  test("without egress connectors, a Python RUN step that fetches fails the build, saying RUN steps have no network and to add INTERNET_EGRESS", async () => {
    const dockerfile = `FROM lmvm/debian12\nCOPY . /src\nRUN python3 /src/fetch.py http://${net.internet.webName}/no-egress-python /out.txt\n`;
    const { version, build: b, log } = await build("no-egress-python", dockerfile, [], scripts);
    assert.equal(version.state, "FAILED");
    const reason = b.stateReason ?? "";
    assert.match(reason, /^Dockerfile step 3\/3: RUN python3 \/src\/fetch\.py .* failed \(exit status 1\)\. Its output shows a network failure: RUN steps have no network, because the image names no egressNetworkConnectors\./);
    assert.ok(reason.includes(`add INTERNET_EGRESS (${INTERNET_EGRESS}) to the image's egressNetworkConnectors`), reason);
    assert.match(reason, /Temporary failure in name resolution/);
    assert.ok(version.stateReason?.endsWith(`failed: ${reason}`), "the version says why too");
    assert.match(log, /RUN steps have no network beyond the instance metadata service at http:\/\/169\.254\.169\.254 \(the build role's credentials\): the image names no egressNetworkConnectors/);
    assert.ok(!net.requests().some((r) => r.url === "/no-egress-python"));
    assert.deepEqual(buildNamespaces(), []);
  });

  test("without egress connectors, a Node RUN step fails by address and by name, and a failure of another kind only gets the hint", async () => {
    const byAddress = `FROM lmvm/debian12\nCOPY . /src\nRUN node /src/fetch.js http://${net.internet.webAddress}/no-egress-node /out.txt\n`;
    const failed = await build("no-egress-node", byAddress, [], scripts);
    assert.equal(failed.version.state, "FAILED");
    const reason = failed.build.stateReason ?? "";
    assert.match(reason, /failed \(exit status 1\)\. Its output shows a network failure: RUN steps have no network, because the image names no egressNetworkConnectors\./);
    assert.match(reason, /ENETUNREACH|Network is unreachable/);
    assert.ok(reason.includes(INTERNET_EGRESS), reason);
    // A step that fails for another reason still says, after its output, that RUN steps have no network.
    const other = await build("no-egress-other", "FROM lmvm/debian12\nRUN node -e 'process.exit(3)'\n", []);
    assert.equal(other.version.state, "FAILED");
    assert.match(other.build.stateReason ?? "", /^Dockerfile step 2\/2: RUN node -e 'process.exit\(3\)' failed \(exit status 3\)\. Last lines of its output:\n[\s\S]*\n\(RUN steps have no network, because the image names no egressNetworkConnectors\. If the step needs the internet/);
    assert.ok(!net.requests().some((r) => r.url === "/no-egress-node"));
    assert.deepEqual(buildNamespaces(), []);
  });

  test("a build cancelled while its RUN step holds a connection to the test internet leaves no namespace", async () => {
    const name = "egress-cancelled";
    // The step connects to the test internet and waits; the image's deletion cancels the build.
    const dockerfile = `FROM lmvm/debian12\nRUN python3 -c "import socket, time; s = socket.create_connection(('${net.internet.webAddress}', 80), timeout=20); print('connected', flush=True); time.sleep(600)"\n`;
    const file = join(dir, `${name}.zip`);
    writeFileSync(file, makeZip([{ name: "Dockerfile", content: dockerfile }]));
    await t.client.send(new CreateMicrovmImageCommand({ name, baseImageArn: DEBIAN12, buildRoleArn: ROLE, codeArtifact: { uri: `file://${file}` }, egressNetworkConnectors: [INTERNET_EGRESS] }));
    const id = (await t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: name, imageVersion: "1.0" }))).items![0]!.buildId!;
    const logFile = join(t.dataDir, "logs", "builds", `${id}.log`);
    await eventually(async () => (existsSync(logFile) && readFileSync(logFile, "utf8").includes("connected") ? true : undefined), "the RUN step to connect", 600_000);
    const owned = buildNamespaces();
    assert.equal(owned.length, 1, "the running build has its namespace");
    assert.ok(existsSync(`/var/run/netns/lmvm-${owned[0]}`));
    await t.client.send(new DeleteMicrovmImageCommand({ imageIdentifier: name }));
    await eventually(async () => (buildNamespaces().length === 0 && !existsSync(`/var/run/netns/lmvm-${owned[0]}`) ? true : undefined), "the build's namespace to go", 60_000);
  });

  test("apt-get install works in a RUN step with INTERNET_EGRESS when this host reaches its Debian mirror", async (ctx) => {
    // The managed debian12 image's apt source is the server's --debian-mirror (deb.debian.org by default).
    // The test server resolves through the test DNS server, which knows only test names, so the step
    // maps the mirror's name to its address itself (the mirror serves by name: by address it answers 404).
    const mirror = await lookup("deb.debian.org", { family: 4 }).catch(() => undefined);
    const reachable = mirror && (await new Promise<boolean>((resolve) => {
      const s = connect({ host: mirror.address, port: 80, timeout: 5_000 }, () => (s.destroy(), resolve(true)));
      s.on("error", () => resolve(false));
      s.on("timeout", () => (s.destroy(), resolve(false)));
    }));
    if (!mirror || !reachable) {
      ctx.skip(`this host cannot reach deb.debian.org${mirror ? ` (${mirror.address})` : ""} on port 80, so apt-get cannot work in a build either`);
      return;
    }
    const dockerfile = [
      "FROM lmvm/debian12",
      "RUN cat /etc/apt/sources.list",
      `RUN echo "${mirror.address} deb.debian.org" >> /etc/hosts && apt-get update && apt-get install -y --no-install-recommends jq && jq --version`,
      // An app that keeps running, for the build's snapshot.
      'CMD ["python3", "-m", "http.server", "8080"]',
    ].join("\n");
    const { version, log } = await build("egress-apt", dockerfile, [INTERNET_EGRESS]);
    assert.equal(version.state, "SUCCESSFUL", `${version.stateReason}\n${log}`);
    assert.match(log, /jq-1\.\d/);
    assert.ok(existsSync(join(rootfs("egress-apt"), "usr", "bin", "jq")));
    assert.deepEqual(buildNamespaces(), []);
  });
});
