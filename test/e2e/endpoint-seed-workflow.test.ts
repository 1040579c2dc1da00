// The seed workflow end to end, nothing skipped, with the real CLI, a real
// `lmvm server`, real gVisor MicroVMs and curl as the client:
// create-microvm-image → run-microvm → create-microvm-auth-token → curl the
// endpoint with the header → suspend → resume → curl (state kept) →
// terminate → curl refused. Then `lmvm exec`, and `lmvm shell` driven
// through a real terminal (a pty), typing a command and reading its exit status.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import pty from "@homebridge/node-pty-prebuilt-multiarch";
import { Gvisor } from "../../src/runtime/index.js";
import { readServerInfo } from "../../src/server/index.js";
import { dataPlaneAppZip } from "../support/dataplane-app.js";
import { within } from "../support/deadline.js";
import { eventually, tempDir } from "../support/platform.js";
import { freeSandboxes } from "../support/sandboxes.js";
import { LMVM, lmvm, spawnServer, type ServerProcess } from "../support/processes.js";

const SHELL = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:SHELL_INGRESS";
// An endpoint token needs HTTP_INGRESS (or ALL_INGRESS), a shell SHELL_INGRESS: this MicroVM takes both.
const HTTP = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS";

function curl(args: string[]): Promise<{ code: number; status: number; body: string }> {
  return new Promise((resolve) => {
    execFile("curl", ["-sS", "--max-time", "60", "-w", "\n%{http_code}", ...args], { timeout: 90_000, killSignal: "SIGKILL" }, (err, stdout) => {
      const lines = stdout.split("\n");
      resolve({ code: err ? Number(err.code) || 1 : 0, status: Number(lines.pop()), body: lines.join("\n") });
    });
  });
}

describe("the seed workflow through the endpoint, with the CLI and curl", { timeout: 900_000 }, () => {
  const dataDir = tempDir("lmvm-seed-");
  let server: ServerProcess;
  const env = { LMVM_DATA_DIR: dataDir };
  const ok = async (args: string[]) => {
    const r = await lmvm(args, env);
    assert.equal(r.code, 0, `lmvm ${args.join(" ")}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const stateOf = (id: string) => ok(["get-microvm", "--microvm-identifier", id, "--query", "state", "--output", "text"]);
  const until = (id: string, want: string) => eventually(async () => ((await stateOf(id)) === want ? true : undefined), want, 120_000);

  before(async () => {
    server = await spawnServer(dataDir, { builds: true });
  });
  after(async () => {
    await server.kill();
    await freeSandboxes(dataDir); // MicroVMs outlive their server by design; a failed test leaves some
  });

  test("create → run → token → curl → suspend → resume → curl → terminate", async () => {
    const zip = join(dataDir, "app.zip");
    writeFileSync(zip, dataPlaneAppZip());
    await ok(["create-microvm-image", "--name", "my-image", "--base-image-arn", "arn:aws:lambda:us-east-1:aws:microvm-image:debian12",
      "--build-role-arn", "arn:aws:iam::000000000000:role/MicroVMBuildRole", "--code-artifact", `uri=file://${zip}`]);
    await eventually(async () => {
      const s = await ok(["get-microvm-image", "--image-identifier", "my-image", "--query", "state", "--output", "text"]);
      assert.notEqual(s, "CREATE_FAILED");
      return s === "CREATED" ? true : undefined;
    }, "the build", 600_000);

    const id = await ok(["run-microvm", "--image-identifier", "arn:aws:lambda:us-east-1:000000000000:microvm-image:my-image", "--ingress-network-connectors", HTTP, SHELL, "--query", "microvmId", "--output", "text"]);
    await until(id, "RUNNING");
    const endpoint = await ok(["get-microvm", "--microvm-identifier", id, "--query", "endpoint", "--output", "text"]);
    const info = readServerInfo(dataDir)!;
    assert.equal(endpoint, `https://${id}.microvm.localhost:${info.endpointPort}`);
    const token = await ok(["create-microvm-auth-token", "--microvm-identifier", id, "--expiration-in-minutes", "10", "--allowed-ports", "port=8080",
      "--query", 'authToken."X-aws-proxy-auth"', "--output", "text"]);
    const get = (tok: string) => curl(["--cacert", info.caFile!, "--connect-to", `::127.0.0.1:${info.endpointPort}`, "-H", `X-aws-proxy-auth: ${tok}`, `${endpoint}/`]);

    const first = await get(token);
    assert.equal(first.status, 200, first.body);
    assert.equal(JSON.parse(first.body).counter, 1, "the first request is served by the snapshot's already-initialised app");
    assert.equal((await get("not-a-token")).status, 403);

    await ok(["suspend-microvm", "--microvm-identifier", id]);
    await until(id, "SUSPENDED");
    await ok(["resume-microvm", "--microvm-identifier", id]);
    assert.equal(await stateOf(id), "RUNNING");
    const second = await get(token);
    assert.equal(second.status, 200, second.body);
    assert.equal(JSON.parse(second.body).counter, 2, "memory state survived suspend and resume");

    const exec = await lmvm(["exec", id, "--", "sh", "-c", "echo from-inside; hostname; exit 4"], env);
    assert.equal(exec.code, 4, exec.stderr);
    assert.equal(exec.stdout, `from-inside\n${id}\n`);

    // `lmvm shell` in a real terminal: type, read the answer, and get the shell's exit status back.
    const term = pty.spawn(LMVM, ["shell", id], { cols: 100, rows: 30, env: { ...process.env, ...env } as Record<string, string> });
    let screen = "";
    term.onData((d) => (screen += d));
    const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
    await eventually(async () => (/[#$] $/m.test(screen) ? true : undefined), "a prompt", 30_000);
    term.write("echo $((6 * 7)); stty size; exit 7\r");
    assert.equal(await within(30_000, "`lmvm shell` to exit after `exit 7`", exited), 7);
    assert.match(screen, /\r42\r+\n/); // the local terminal adds its own \r (onlcr)
    assert.match(screen, /30 100/);

    await ok(["terminate-microvm", "--microvm-identifier", id]);
    await until(id, "TERMINATED");
    const refused = await get(token);
    assert.equal(refused.status, 403);
    assert.match(refused.body, /terminated/);

    const left = await new Gvisor({ stateRoot: join(dataDir, "runsc", "microvms") }).list();
    assert.deepEqual(left, [], `no sandbox is left after terminate-microvm; server log:\n${server.output().slice(-3000)}`);
    assert.deepEqual(readdirSync(join(dataDir, "networks")), [], "no network namespace is left");
  });
});
