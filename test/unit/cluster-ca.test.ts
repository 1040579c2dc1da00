// The cluster CA's certificate checks (src/cluster/ca.ts): a node's certificate is kept only when
// its subjectAltName names every address exactly, and a peer is accepted only with its role.

import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { after, describe, test } from "node:test";
import { checkNodeIdentity, initCluster, issueNode } from "../../src/cluster/ca.js";
import { tempDir } from "../support/platform.js";

/** A certificate as a TLS socket reports its peer's: subject fields and subjectaltname. */
function peerOf(pem: string): PeerCertificate {
  const x = new X509Certificate(pem);
  const subject = Object.fromEntries(x.subject.split("\n").map((l) => l.split("=") as [string, string]));
  return { subject, subjectaltname: x.subjectAltName } as unknown as PeerCertificate;
}

describe("cluster CA", () => {
  const dir = tempDir("lmvm-ca-unit-");
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("a certificate is kept only when its subjectAltName names each address exactly, not as a prefix", async () => {
    await initCluster(dir);
    assert.equal((await issueNode(dir, "n1", "agent", ["10.0.0.12"])).issued, true);
    assert.equal((await issueNode(dir, "n1", "agent", ["10.0.0.12"])).issued, false, "the same address: kept");
    // "IP Address:10.0.0.12" contains "IP Address:10.0.0.1": a substring check kept the wrong certificate.
    assert.equal((await issueNode(dir, "n1", "agent", ["10.0.0.1"])).issued, true, "another address: a new certificate");
    assert.equal((await issueNode(dir, "n1", "agent", ["10.0.0.1"])).issued, false);
    assert.equal((await issueNode(dir, "n2", "agent", ["agents.example"])).issued, true);
    assert.equal((await issueNode(dir, "n2", "agent", ["agents.example.org"])).issued, true, "a longer DNS name is another name");
  });

  test("a peer must be of the expected role as well as named for the address dialled", async () => {
    const agent = peerOf(readFileSync((await issueNode(dir, "host-x", "agent", ["10.0.0.7"])).cert, "utf8"));
    const server = peerOf(readFileSync((await issueNode(dir, "server", "server", ["10.0.0.7"])).cert, "utf8"));
    assert.equal(checkNodeIdentity("agent")("10.0.0.7", agent), undefined);
    assert.match(String(checkNodeIdentity("agent")("10.0.0.7", server)), /a server's \(server\), not an agent's/);
    assert.match(String(checkNodeIdentity("server")("10.0.0.7", agent)), /not a server's/);
    assert.ok(checkNodeIdentity("agent")("10.0.0.8", agent) instanceof Error, "another address is refused");
  });
});
