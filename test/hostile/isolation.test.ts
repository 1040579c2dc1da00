// Isolation, tried from inside: code running as root in a MicroVM (through
// `lmvm exec`) and in a build's RUN step tries to reach the host's services,
// another MicroVM, the host's files and processes, and lmvm's secrets. Each
// attempt must fail; each has a control that shows the tool itself works.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CreateMicrovmImageCommand, GetMicrovmImageCommand, RunMicrovmCommand, GetMicrovmCommand } from "@aws-sdk/client-lambda-microvms";
import { makeZip } from "../support/artifacts.js";
import { BASE_IMAGE_CACHE } from "../support/artifacts.js";
import { within } from "../support/deadline.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { lmvm } from "../support/processes.js";
import { record } from "./report.js";

const SHELL = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:SHELL_INGRESS";
const MARKER = `/tmp/lmvm-host-secret-${process.pid}`;

/** What a RUN step sees, written into the image for the test to read: it tries the host's files, processes and control API. */
const probe = (apiPort: string) => [
  `test -e ${MARKER} && echo host-file:visible || echo host-file:hidden`,
  "ls /proc | grep -c '^[0-9]' | sed 's/^/processes:/'",
  `nc -w 2 127.0.0.1 ${apiPort} </dev/null >/dev/null 2>&1 && echo network:reached || echo network:none`,
].join("; ");

describe("isolation", { timeout: 900_000 }, () => {
  let t: TestPlatform;
  let hostService: Server;
  let hostPort: number;
  const ids: string[] = [];
  const ipOf = (id: string) => JSON.parse(readFileSync(join(t.dataDir, "microvms", id, "sandbox.json"), "utf8")).sandboxIp as string;
  const gatewayOf = (ip: string) => ip.replace(/\d+$/, (n) => String(Number(n) - 1));
  const inside = async (id: string, script: string) => {
    const r = await lmvm(["exec", id, "--data-dir", t.dataDir, "--endpoint-url", t.platform.url, "--", "sh", "-c", script]);
    return { code: r.code, out: r.stdout + r.stderr };
  };

  before(async () => {
    writeFileSync(MARKER, "host secret");
    // A host service on every address, as sshd or a database would be.
    hostService = createServer((s) => s.end("host service\n"));
    await within(10_000, "the host service to listen", new Promise<void>((r) => hostService.listen(0, "0.0.0.0", () => r())));
    hostPort = (hostService.address() as { port: number }).port;
    t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE });
    const zip = join(tempDir("lmvm-iso-"), "app.zip");
    writeFileSync(zip, makeZip([
      { name: "Dockerfile", content: `FROM lmvm/busybox\nRUN mkdir -p /srv && echo ok > /srv/index.html\nRUN sh -c "${probe(new URL(t.platform.url).port)}" > /build-probe.txt 2>&1\nCMD ["httpd", "-f", "-p", "8080", "-h", "/srv"]\n` },
    ]));
    await t.client.send(new CreateMicrovmImageCommand({
      name: "iso", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: `file://${zip}` },
    }));
    const built = await eventually(async () => {
      const s = (await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "iso" }))).state;
      return s === "CREATED" || s === "CREATE_FAILED" ? s : undefined;
    }, "the image build", 300_000);
    assert.equal(built, "CREATED");
    for (let i = 0; i < 2; i++) {
      const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: "arn:aws:lambda:us-east-1:000000000000:microvm-image:iso", ingressNetworkConnectors: [SHELL] }));
      ids.push(microvmId!);
    }
    for (const id of ids) await eventually(async () => ((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state === "RUNNING" ? true : undefined), "RUNNING", 60_000);
  });
  after(async () => {
    rmSync(MARKER, { force: true });
    hostService.close();
    await t.stop();
  });

  test("a MicroVM cannot open connections to the host: not its services, not the control API, not the proxy", async () => {
    const [a] = ids;
    const gateway = gatewayOf(ipOf(a!));
    const control = await inside(a!, "echo | nc -w 2 127.0.0.1 8080 >/dev/null && echo own-port:open");
    assert.match(control.out, /own-port:open/, "control: nc works inside");
    const apiPort = new URL(t.platform.url).port;
    for (const [what, port] of [["a host service on 0.0.0.0", hostPort], ["the control API", apiPort], ["the endpoint proxy", t.platform.endpointPort]] as const) {
      for (const address of [gateway, "127.0.0.1"]) {
        const r = await inside(a!, `nc -w 2 ${address} ${port} </dev/null && echo reached || echo blocked`);
        assert.match(r.out, /blocked/, `${what} at ${address}:${port}: ${r.out}`);
        record("isolation", `MicroVM → ${what} (${address === "127.0.0.1" ? "loopback" : "host gateway"})`, "blocked");
      }
    }
  });

  test("a MicroVM cannot reach another MicroVM, even with IP forwarding on", async () => {
    const [a, b] = ids;
    const forward = readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8").trim();
    writeFileSync("/proc/sys/net/ipv4/ip_forward", "1");
    try {
      const r = await inside(a!, `wget -q -T 2 -O - http://${ipOf(b!)}:8080/ && echo reached || echo blocked`);
      assert.match(r.out, /blocked/, r.out);
    } finally {
      writeFileSync("/proc/sys/net/ipv4/ip_forward", forward);
    }
    record("isolation", "MicroVM → another MicroVM's address (host forwarding on)", "blocked");
  });

  test("a MicroVM sees neither the host's files, nor another MicroVM's, nor the host's processes, nor lmvm's secrets", async () => {
    const [a, b] = ids;
    await inside(a!, "echo tenant-a-secret > /srv/secret-a");
    const checks: [string, string, RegExp][] = [
      ["the host's files", `cat ${MARKER} /proc/1/root${MARKER} 2>&1; echo end`, /^(?![\s\S]*host secret)/],
      ["another MicroVM's files", "cat /srv/secret-a 2>&1; echo end", /No such file/],
      ["lmvm's credentials and keys", `cat ${t.dataDir}/credentials ${t.dataDir}/secrets/server.key ${t.dataDir}/tls/ca.key 2>&1; echo end`, /No such file[\s\S]*No such file[\s\S]*No such file/],
      ["the host's processes", `ls /proc | grep -c '^[0-9]'`, /^\d$/m],
      ["the root credentials in its environment", "cat /proc/1/environ | tr '\\0' '\\n' | grep -ci secret; true", /^0$/m],
    ];
    for (const [what, script, expected] of checks) {
      const r = await inside(b!, script);
      assert.match(r.out, expected, `${what}: ${r.out}`);
      record("isolation", `MicroVM → ${what}`, "not visible");
    }
    assert.ok(!readFileSync(join(t.dataDir, "credentials"), "utf8").includes("tenant-a-secret"));
    const processes = Number((await inside(b!, "ls /proc | grep -c '^[0-9]'")).out.trim());
    assert.ok(processes < 10, `only the sandbox's own processes: ${processes}`);
  });

  test("a build's RUN step sees no network, no host files and no host processes", async () => {
    const versions = join(t.dataDir, "images", "iso", "1.0");
    const probe = readFileSync(join(versions, readdirSync(versions)[0]!, "rootfs", "build-probe.txt"), "utf8");
    assert.match(probe, /host-file:hidden/, probe);
    assert.match(probe, /network:none/, probe);
    const processes = Number(/processes:(\d+)/.exec(probe)?.[1]);
    assert.ok(processes < 10, `a RUN step sees only its own processes: ${probe}`);
    for (const what of ["the host's files", "the network (host loopback included)", "the host's processes"]) record("isolation", `build RUN step → ${what}`, "not visible");
    // The host is still fine.
    assert.equal(execFileSync("cat", [MARKER], { encoding: "utf8" }), "host secret");
  });
});
