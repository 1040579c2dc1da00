// The server's side of processes on cluster hosts (src/cluster/spawn.ts) against a stand-in agent
// over real mutual TLS: a frame that is not a message ends the process instead of throwing in the
// server, a connection closed before the start rejects, and a peer whose certificate is not an
// agent's is refused.

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { createServer, type Server } from "node:https";
import { after, before, describe, test } from "node:test";
import { WebSocketServer } from "ws";
import { initCluster, nodeCredentials, type NodeCredentials } from "../../src/cluster/ca.js";
import { remoteSpawn } from "../../src/cluster/spawn.js";
import { within } from "../support/deadline.js";
import { tempDir } from "../support/platform.js";

describe("remote processes", () => {
  const dir = tempDir("lmvm-spawn-unit-");
  let server: NodeCredentials;
  const listeners: Server[] = [];

  /** A stand-in agent on 127.0.0.1 with `role`'s certificate that answers each process connection with `frames`. */
  async function agent(name: string, role: "agent" | "server", frames: string[]): Promise<string> {
    const tls = await nodeCredentials(dir, name, role, ["127.0.0.1"]);
    const https = createServer({ ca: tls.ca, cert: tls.cert, key: tls.key, requestCert: true, rejectUnauthorized: true });
    const wss = new WebSocketServer({ server: https });
    wss.on("connection", (ws) => {
      for (const f of frames) ws.send(f);
      if (!frames.length) ws.close();
    });
    listeners.push(https);
    await new Promise<void>((r) => https.listen(0, "127.0.0.1", () => r()));
    return `127.0.0.1:${(https.address() as { port: number }).port}`;
  }

  before(async () => {
    await initCluster(dir);
    server = await nodeCredentials(dir, "server", "server", []);
  });
  after(() => {
    for (const l of listeners) l.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a frame that is not a message ends the process with 255; the server does not throw", async () => {
    const address = await agent("host-bad", "agent", [JSON.stringify({ t: "started" }), "{not json"]);
    const proc = await within(10_000, "the process to start", remoteSpawn(server, address, "microvm-00000000000000001", 1, { argv: ["true"], tty: false }));
    const code = await within(10_000, "the process to end", new Promise<number>((r) => proc.onExit(r)));
    assert.equal(code, 255);
  });

  test("a connection closed before the process started rejects, naming the host", async () => {
    const address = await agent("host-close", "agent", []);
    await within(10_000, "the refusal", assert.rejects(remoteSpawn(server, address, "microvm-00000000000000002", 1, { argv: ["true"], tty: false }), /closed the connection before the process .* started/));
  });

  test("a peer with a certificate that is not an agent's is refused", async () => {
    const address = await agent("not-an-agent", "server", [JSON.stringify({ t: "started" })]);
    await within(10_000, "the refusal", assert.rejects(remoteSpawn(server, address, "microvm-00000000000000003", 1, { argv: ["true"], tty: false }), /not an agent's/));
  });
});
