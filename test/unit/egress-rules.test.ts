// What the host is told to enforce for a sandbox's EgressPolicy: its nftables
// chain (grants in order, internet TCP outside the denied ranges, a counted
// drop, the connection limit), its routes, its shaping, and the DNS
// forwarder's relay and error answers. The scripts are also checked by nft
// itself (nft -c: parsed and validated by the kernel, nothing committed).

import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { NO_EGRESS, type EgressPolicy } from "../../src/core/index.js";
import { baseRules, DENIED_RANGES, DnsForwarder, errorAnswer, nameserversOf, standardQuery, removalRules, routesFor, sandboxRules, shapingArgs } from "../../src/net/index.js";
import { event, within } from "../support/deadline.js";
import { tempDir } from "../support/platform.js";

const INTERNET: EgressPolicy = { internet: true, rules: [], connectors: ["arn:aws:lambda:us-east-1:aws:network-connector:aws-network-egress"] };
const PRIVATE: EgressPolicy = {
  internet: false,
  connectors: ["arn:aws:lambda:us-east-1:000000000000:network-connector:db:1"],
  rules: [
    { cidrs: ["10.77.0.0/24"], protocol: "tcp", ports: { from: 5432, to: 5432 } },
    { cidrs: ["10.77.1.5/32", "10.77.1.6/32"], protocol: "udp", ports: { from: 8000, to: 8100 } },
    { cidrs: ["10.78.0.0/16"], protocol: "icmp" },
    { cidrs: ["10.79.0.1"], protocol: "all", hostName: "db.corp.test" },
  ],
};

function ruleLines(script: string, chain: string): string[] {
  return script.split("\n").filter((l) => l.startsWith(`add rule inet lmvm ${chain} `)).map((l) => l.slice(`add rule inet lmvm ${chain} `.length));
}

type Emitter = Parameters<typeof event>[2];

function nftCheck(script: string): void {
  const file = join(tempDir("lmvm-nftc-"), "check.nft");
  writeFileSync(file, script);
  execFileSync("nft", ["-c", "-f", file], { stdio: ["ignore", "ignore", "pipe"] });
}

test("INTERNET_EGRESS: the connection limit, then TCP to any IPv4 address outside the denied ranges, then a counted drop; no UDP", () => {
  const lines = ruleLines(sandboxRules("lmvmh7", INTERNET, { connections: 32 }), "lmvmh7");
  assert.deepEqual(lines, [
    "meta l4proto tcp ct state new ct count over 32 counter drop",
    "ip daddr != @denied meta l4proto tcp accept",
    'counter name "refused_lmvmh7" drop',
  ]);
  const script = sandboxRules("lmvmh7", INTERNET, { connections: 32 });
  assert.match(script, /add element inet lmvm egress \{ "lmvmh7" : jump lmvmh7 \}/);
  assert.match(script, /add element inet lmvm resolving \{ "lmvmh7" \}\n/);
  assert.doesNotMatch(script, /delete element inet lmvm resolving/);
  assert.doesNotMatch(script, /udp/);
});

test("connector rules become one accept per CIDR in order, with their protocol and port range; the resolver is reachable", () => {
  const script = sandboxRules("lmvmh3", PRIVATE, { connections: 8 });
  assert.deepEqual(ruleLines(script, "lmvmh3"), [
    "meta l4proto tcp ct state new ct count over 8 counter drop",
    "ip daddr 10.77.0.0/24 tcp dport 5432 accept",
    "ip daddr 10.77.1.5/32 udp dport 8000-8100 accept",
    "ip daddr 10.77.1.6/32 udp dport 8000-8100 accept",
    "ip daddr 10.78.0.0/16 meta l4proto icmp accept",
    "ip daddr 10.79.0.1 accept",
    'counter name "refused_lmvmh3" drop',
  ]);
  assert.match(script, /add element inet lmvm resolving \{ "lmvmh3" \}\n$/m);
  const anyPort = sandboxRules("lmvmh3", { ...PRIVATE, rules: [{ cidrs: ["10.77.0.0/24"], protocol: "tcp" }] }, { connections: 8 });
  assert.deepEqual(ruleLines(anyPort, "lmvmh3")[1], "ip daddr 10.77.0.0/24 meta l4proto tcp accept");
  const allPorts = sandboxRules("lmvmh3", { ...PRIVATE, rules: [{ cidrs: ["10.77.0.0/24"], protocol: "all", ports: { from: 53, to: 54 } }] }, { connections: 8 });
  assert.deepEqual(ruleLines(allPorts, "lmvmh3")[1], "ip daddr 10.77.0.0/24 meta l4proto { tcp, udp } th dport 53-54 accept");
  nftCheck(baseRules() + allPorts.replace(/lmvmh3/g, "lmvmh65004"));
});

test("no egress: a chain that drops everything, and no resolver redirect", () => {
  const script = sandboxRules("lmvmh0", NO_EGRESS, { connections: 8 });
  assert.deepEqual(ruleLines(script, "lmvmh0"), ["meta l4proto tcp ct state new ct count over 8 counter drop", 'counter name "refused_lmvmh0" drop']);
  assert.match(script, /delete element inet lmvm resolving \{ "lmvmh0" \}\n$/);
});

test("bad interface names and limits are refused rather than written into nft", () => {
  assert.throws(() => sandboxRules("eth0", INTERNET, { connections: 8 }), /not a sandbox host veth/);
  assert.throws(() => sandboxRules('lmvmh1"; flush ruleset', INTERNET, { connections: 8 }), /not a sandbox host veth/);
  assert.throws(() => sandboxRules("lmvmh1", INTERNET, { connections: 0 }), /connections must be a positive integer/);
  assert.throws(() => removalRules("lmvmh1 x"), /not a sandbox host veth/);
});

test("the denied ranges cover private, CGNAT, loopback, link-local, multicast, reserved and this-network addresses", () => {
  for (const r of ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "0.0.0.0/8"]) assert.ok((DENIED_RANGES as readonly string[]).includes(r), r);
  const base = baseRules();
  // Nothing new reaches a sandbox from elsewhere, and sandboxes only reach the host with replies and redirected DNS.
  assert.match(base, /oifname "lmvmh\*" counter drop/);
  assert.match(base, /iifname "lmvmh\*" ct status dnat meta l4proto \{ tcp, udp \} th dport 53 accept/);
  assert.match(base, /iifname @resolving ip daddr 169\.254\.169\.253 meta l4proto \{ tcp, udp \} th dport 53 redirect to :53/);
  // Every sandbox's TCP to 169.254.169.254:80 goes to its own host veth's address, and only that redirect is let in on port 80.
  assert.match(base, /iifname "lmvmh\*" ip daddr 169\.254\.169\.254 tcp dport 80 redirect to :80/);
  assert.match(base, /iifname "lmvmh\*" ct status dnat ct original ip daddr 169\.254\.169\.254 tcp dport 80 accept/);
  assert.match(base, /iifname "lmvmh\*" oifname != "lmvmh\*" masquerade/);
  assert.equal((base.match(/fib saddr \. iif oif missing counter drop/g) ?? []).length, 2, "spoofed sources dropped in input and forward");
  assert.doesNotMatch(base, /delete table/, "the shared table is never deleted");
});

test("nft accepts every script (checked, not committed)", () => {
  nftCheck(baseRules());
  nftCheck(baseRules() + sandboxRules("lmvmh65000", INTERNET, { connections: 128 }));
  nftCheck(baseRules() + sandboxRules("lmvmh65001", PRIVATE, { connections: 8 }));
  nftCheck(baseRules() + sandboxRules("lmvmh65002", NO_EGRESS, { connections: 8 }));
  nftCheck(baseRules() + removalRules("lmvmh65003"));
});

test("routes: a default route for INTERNET_EGRESS, each granted CIDR, the resolver and the metadata address for rules, the metadata address alone without egress", () => {
  assert.deepEqual(routesFor(INTERNET), ["default"]);
  assert.deepEqual(routesFor({ ...INTERNET, rules: PRIVATE.rules }), ["default"]);
  assert.deepEqual(routesFor(PRIVATE), ["10.77.0.0/24", "10.77.1.5/32", "10.77.1.6/32", "10.78.0.0/16", "10.79.0.1/32", "169.254.169.253/32", "169.254.169.254/32"]);
  assert.deepEqual(routesFor(NO_EGRESS), ["169.254.169.254/32"], "every sandbox reaches its metadata service");
  assert.deepEqual(routesFor(undefined), ["169.254.169.254/32"]);
});

test("shaping: a token bucket at the rate, a burst above a packet, and a queue of two seconds at the rate", () => {
  assert.deepEqual(shapingArgs("lmvmh1", 1_000_000), ["qdisc", "replace", "dev", "lmvmh1", "root", "tbf", "rate", "8000000bit", "burst", "65536", "limit", "2065536"]);
  assert.deepEqual(shapingArgs("lmvms1", 16_000_000).slice(6), ["rate", "128000000bit", "burst", "800000", "limit", "32800000"]);
  assert.throws(() => shapingArgs("lmvmh1", 0), /positive integer/);
});

test("resolv.conf nameservers are read, comments and junk skipped", () => {
  assert.deepEqual(nameserversOf("# x\nnameserver 10.255.255.53\nsearch a\nnameserver  1.1.1.1 \nnameserver nope\nnameserver fe80::1%eth0\n"), ["10.255.255.53", "1.1.1.1", "fe80::1%eth0"]);
});

/** A query for `name` (type A), with id `id`. */
function query(name: string, id: number): Buffer {
  const labels = name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.from([id >> 8, id & 255, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([head, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

test("an error answer keeps the id and question, and says SERVFAIL or REFUSED", () => {
  const q = query("example.test", 0xbeef);
  const a = errorAnswer(q, 2)!;
  assert.equal(a.readUInt16BE(0), 0xbeef);
  assert.equal(a.readUInt16BE(2) & 0x800f, 0x8002, "QR set, RCODE SERVFAIL");
  assert.equal(a.readUInt16BE(2) & 0x0100, 0x0100, "RD kept");
  assert.equal(a.readUInt16BE(4), 1);
  assert.deepEqual(a.subarray(12), q.subarray(12));
  assert.equal(errorAnswer(Buffer.alloc(5), 2), undefined);
  assert.equal(errorAnswer(Buffer.concat([q.subarray(0, 12), Buffer.from([0xc0, 0x0c])]), 5)!.readUInt16BE(4), 0, "a compressed question is not echoed");
});

test("the forwarder relays queries byte for byte over UDP and TCP, and answers SERVFAIL when the upstream is silent", { timeout: 30_000 }, async () => {
  const upstreamIp = `127.${(process.pid >> 8) & 255}.${process.pid & 255}.2`;
  const listenIp = upstreamIp.replace(/\.2$/, ".1");
  const silentIp = upstreamIp.replace(/\.2$/, ".3");
  const seen: Buffer[] = [];
  const answerTo = (m: Buffer) => Buffer.concat([m.subarray(0, 2), Buffer.from([0x81, 0x80]), m.subarray(4), Buffer.from("tail")]);
  const udp = createSocket("udp4");
  udp.on("message", (m, r) => (seen.push(m), udp.send(answerTo(m), r.port, r.address)));
  await new Promise<void>((res) => udp.bind(53, upstreamIp, res));
  const tcp = createServer((s) => s.once("data", (d: Buffer) => {
    const m = d.subarray(2, 2 + d.readUInt16BE(0));
    seen.push(m);
    const a = answerTo(m);
    s.end(Buffer.concat([Buffer.from([a.length >> 8, a.length & 255]), a]));
  }));
  await new Promise<void>((res) => tcp.listen(53, upstreamIp, res));
  const silent = createSocket("udp4");
  await new Promise<void>((res) => silent.bind(53, silentIp, res));
  const fwd = new DnsForwarder([upstreamIp]);
  const deaf = new DnsForwarder([silentIp]);
  try {
    await fwd.bind(1, listenIp);
    const client = createSocket("udp4");
    const q = query("relay.test", 4242);
    client.send(q, 53, listenIp);
    const [a] = await event<[Buffer]>(5000, "the relayed answer", client as unknown as Emitter, "message");
    assert.deepEqual(a, answerTo(q));
    assert.deepEqual(seen[0], q, "the upstream got the query unchanged");

    const tq = query("tcp.test", 7);
    const sock = connect(53, listenIp);
    sock.write(Buffer.concat([Buffer.from([0, tq.length]), tq]));
    const [t] = await event<[Buffer]>(5000, "the TCP answer", sock as unknown as Emitter, "data");
    assert.deepEqual(t.subarray(2), answerTo(tq));
    sock.destroy();
    assert.equal(fwd.queries().get(1), 2);

    await fwd.unbind(1);
    await deaf.bind(2, listenIp);
    client.send(query("silent.test", 9), 53, listenIp);
    const [s] = await event<[Buffer]>(10_000, "SERVFAIL from a silent upstream", client as unknown as Emitter, "message");
    assert.equal(s.readUInt16BE(0), 9);
    assert.equal(s.readUInt16BE(2) & 0xf, 2);
    client.close();
  } finally {
    await within(5000, "closing the forwarders", Promise.all([fwd.close(), deaf.close()]));
    udp.close();
    silent.close();
    tcp.close();
  }
});

test("only standard queries are relayed: no UPDATE, NOTIFY, zone transfer, answer or malformed packet", () => {
  const q = query("example.test", 1);
  assert.equal(standardQuery(q), true);
  const withFlags = (flags: number) => Buffer.concat([q.subarray(0, 2), Buffer.from([flags >> 8, flags & 255]), q.subarray(4)]);
  assert.equal(standardQuery(withFlags(0x2800)), false, "opcode UPDATE (5)");
  assert.equal(standardQuery(withFlags(0x2000)), false, "opcode NOTIFY (4)");
  assert.equal(standardQuery(withFlags(0x8180)), false, "a response");
  const axfr = Buffer.from(q);
  axfr.writeUInt16BE(252, axfr.length - 4);
  assert.equal(standardQuery(axfr), false, "AXFR");
  const twoQuestions = Buffer.from(q);
  twoQuestions.writeUInt16BE(2, 4);
  assert.equal(standardQuery(twoQuestions), false);
  const withAnswer = Buffer.from(q);
  withAnswer.writeUInt16BE(1, 6);
  assert.equal(standardQuery(withAnswer), false, "UPDATE-style records in the answer section");
  assert.equal(standardQuery(q.subarray(0, q.length - 2)), false, "cut short");
  assert.equal(standardQuery(Buffer.alloc(8)), false);
});

test("the forwarder answers only its sandbox, sends non-standard queries nowhere, and survives an unbind while a query is relayed", { timeout: 30_000 }, async () => {
  const base = `127.${(process.pid >> 8) & 255}.${(process.pid + 1) & 255}`;
  const listenIp = `${base}.1`, peerIp = `${base}.2`, strangerIp = `${base}.4`, silentIp = `${base}.3`;
  const reached: Buffer[] = [];
  const silent = createSocket("udp4");
  silent.on("message", (m) => reached.push(m)); // never answers: the relay waits for its deadline
  await new Promise<void>((res) => silent.bind(53, silentIp, res));
  const fwd = new DnsForwarder([silentIp]);
  const client = createSocket("udp4");
  const stranger = createSocket("udp4");
  try {
    await new Promise<void>((res) => client.bind(0, peerIp, res));
    await new Promise<void>((res) => stranger.bind(0, strangerIp, res));
    await fwd.bind(7, listenIp, peerIp);
    // An UPDATE gets NOTIMP and never reaches the upstream.
    const update = query("zone.test", 11);
    update.writeUInt16BE(0x2800, 2);
    client.send(update, 53, listenIp);
    const [n] = await event<[Buffer]>(5000, "NOTIMP for an UPDATE", client as unknown as Emitter, "message");
    assert.equal(n.readUInt16BE(0), 11);
    assert.equal(n.readUInt16BE(2) & 0xf, 4);
    // A query from another address is not answered (the sandbox's query below is, so the stranger's was seen first).
    let strangerAnswered = false;
    stranger.on("message", () => (strangerAnswered = true));
    stranger.send(query("stranger.test", 12), 53, listenIp);
    // The sandbox's query is relayed to the silent upstream; unbinding meanwhile must not crash the process.
    client.send(query("slow.test", 13), 53, listenIp);
    await within(5000, "the upstream to get the relayed query", (async () => { while (!reached.length) await new Promise((r) => setTimeout(r, 20)); })());
    await fwd.unbind(7);
    // Past the relay's deadline (3 s), nothing was sent on the closed socket and nothing threw.
    await new Promise((r) => setTimeout(r, 3500));
    assert.equal(strangerAnswered, false, "a query from an address other than the sandbox's got an answer");
    assert.equal(reached.length, 1, "only the sandbox's standard query reached the upstream");
  } finally {
    client.close();
    stranger.close();
    silent.close();
    await fwd.close();
  }
});
