// The host's egress enforcement on real gVisor sandboxes, below the API: a
// snapshot taken without egress is restored into namespaces the EgressGateway
// attached with INTERNET_EGRESS and with none. A test "internet" (a network
// namespace with a web server and a DNS server at 198.51.100.202, routed
// through a veth of its own) stands for the world. The sandbox with egress
// fetches a page by address and by name (through 169.254.169.253), masqueraded
// behind the host; the one without fails at once; neither reaches the host or
// the other sandbox; detach leaves no chain, qdisc or socket. The full matrix
// through the API is test/e2e/egress*.test.ts and test/hostile.

import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { NO_EGRESS, type EgressPolicy } from "../../src/core/index.js";
import { EgressGateway, FIREWALL_TABLE, NetworkNamespaces, type SandboxNetwork } from "../../src/net/index.js";
import { Gvisor, type SandboxSpec } from "../../src/runtime/index.js";
import { until } from "../support/deadline.js";
import { tempDir } from "../support/platform.js";
import { busyboxRootfs } from "../support/busybox-rootfs.js";

const INTERNET: EgressPolicy = { internet: true, rules: [], connectors: ["arn:aws:lambda:us-east-1:aws:network-connector:aws-network-egress"] };
const LIMITS = { bandwidthBytesPerSecond: 1_000_000, connections: 8 };
// Our own corner of the documentation range (other test files use 198.51.100.0/24 and its .10).
const WORLD_HOST = "198.51.100.201";
const WORLD = "198.51.100.202";
const TAG = String(process.pid % 100000);
const WORLD_NS = `lmvmegw${TAG}`;
const WORLD_VETH = `lmvmegw${TAG}`; // host side; the peer inside is "eth0"

function sh(cmd: string): string {
  return execFileSync("sh", ["-c", cmd], { encoding: "utf8" });
}

/** A web server answering with the address the request came from, and a DNS server answering world.test. with WORLD, in the world namespace. */
const WORLD_SERVERS = `
const http = require("node:http"), dgram = require("node:dgram");
http.createServer((q, s) => s.end("hello from the world, you are " + q.socket.remoteAddress + "\\n")).listen(8080, "${WORLD}");
// Holds every connection open until the client closes it.
require("node:net").createServer((c) => { c.on("error", () => {}); c.on("end", () => c.end()); c.resume(); }).listen(8083, "${WORLD}");
const dns = dgram.createSocket("udp4");
dns.on("message", (m, r) => {
  // Echo the question, one A record for it (a pointer to the question's name).
  let end = 12; while (m[end] !== 0) end += m[end] + 1; end += 5;
  const name = []; for (let i = 12; m[i] !== 0; i += m[i] + 1) name.push(m.subarray(i + 1, i + 1 + m[i]).toString());
  const known = name.join(".") === "world.test" && m.readUInt16BE(end - 4) === 1;
  const head = Buffer.from(m.subarray(0, end)); head.writeUInt16BE(0x8180 | (known ? 0 : 3), 2); head.writeUInt16BE(known ? 1 : 0, 6);
  const rr = Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...${JSON.stringify(WORLD)}.split(".").map(Number)]);
  dns.send(known ? Buffer.concat([head, rr]) : head, r.port, r.address);
});
dns.bind(53, "${WORLD}");
`;

describe("egress enforcement on gVisor sandboxes", { timeout: 240_000 }, () => {
  const dir = tempDir("lmvm-egress-");
  const rootfs = busyboxRootfs(dir);
  const gvisor = new Gvisor({ stateRoot: join(dir, "runsc") });
  const nets = new NetworkNamespaces("10.213.0.0/24", join(dir, "networks"));
  const gateway = new EgressGateway({ nets, resolvers: [WORLD] });
  const networks: SandboxNetwork[] = [];
  const specs: SandboxSpec[] = [];
  let world: ChildProcess | undefined;
  let hostService: ReturnType<typeof createServer> | undefined;

  const spec = (id: string, network: SandboxNetwork): SandboxSpec => {
    const s: SandboxSpec = {
      id: `${id}-${TAG}`,
      rootfs,
      config: { Cmd: ["/bin/sh", "-c", "mkdir -p /srv && echo up > /srv/up && exec httpd -f -p 8080 -h /srv"], Env: ["PATH=/bin"] },
      env: {},
      hostname: id,
      network,
      dir: join(dir, id),
      logFile: join(dir, `${id}.log`),
    };
    specs.push(s);
    return s;
  };
  const inside = async (s: SandboxSpec, script: string) => {
    const r = await gvisor.exec(s.id, ["/bin/sh", "-c", script], [], AbortSignal.timeout(30_000));
    return r.stdout;
  };
  const fetchFrom = (s: SandboxSpec, host: string, port = 8080) => inside(s, `printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | nc -w 3 ${host} ${port} 2>&1; echo "exit=$?"`);

  let withEgress: SandboxSpec;
  let without: SandboxSpec;

  before(async () => {
    writeFileSync(join(dir, "world.js"), WORLD_SERVERS);
    sh(`ip netns add ${WORLD_NS} && ip link add ${WORLD_VETH} type veth peer name eth0 netns ${WORLD_NS}`);
    sh(`ip addr add ${WORLD_HOST}/30 dev ${WORLD_VETH} && ip link set ${WORLD_VETH} up`);
    sh(`ip -n ${WORLD_NS} addr add ${WORLD}/30 dev eth0 && ip -n ${WORLD_NS} link set eth0 up && ip -n ${WORLD_NS} link set lo up && ip -n ${WORLD_NS} route add default via ${WORLD_HOST}`);
    world = spawn("ip", ["netns", "exec", WORLD_NS, process.execPath, join(dir, "world.js")], { stdio: "ignore" });
    // A service on the host, on every address: a sandbox must not reach it.
    hostService = createServer((c) => c.end("host service\n")).listen(18099, "0.0.0.0");
    // Repairs every second: servers of older lmvm versions on this host replace the whole table as they start.
    await gateway.install(1000);

    // The snapshot every sandbox here is restored from is taken without egress, as a build's is.
    const bootNet = await nets.create();
    networks.push(bootNet);
    await gateway.attach(bootNet, NO_EGRESS, LIMITS);
    const boot = spec("egress-boot", bootNet);
    await gvisor.run(boot);
    await until(20_000, "the boot sandbox to start", async () => (await inside(boot, "cat /srv/up")).includes("up"), 200);
    await gvisor.checkpoint(boot.id, join(dir, "snapshot"));
    await gateway.detach(bootNet);

    const a = await nets.create();
    const b = await nets.create();
    networks.push(a, b);
    await gateway.attach(a, INTERNET, LIMITS);
    await gateway.attach(b, NO_EGRESS, LIMITS);
    withEgress = spec("egress-internet", a);
    without = spec("egress-none", b);
    await gvisor.restore(withEgress, join(dir, "snapshot"));
    await gvisor.restore(without, join(dir, "snapshot"));
  });

  after(async () => {
    for (const s of specs) {
      await gvisor.destroy(s.id);
      Gvisor.forget(s);
    }
    for (const n of networks) {
      await gateway.detach(n);
      await nets.destroy(n);
    }
    await gateway.close();
    world?.kill("SIGKILL");
    hostService?.close();
    sh(`ip link del ${WORLD_VETH} 2>/dev/null; ip netns del ${WORLD_NS} 2>/dev/null; true`);
    rmSync(dir, { recursive: true, force: true });
  });

  test("a sandbox with INTERNET_EGRESS reaches the test internet by address, masqueraded behind the host", async () => {
    assert.match(await inside(withEgress, "ip route"), /default via/, "gVisor took the namespace's default route at restore");
    const page = await fetchFrom(withEgress, WORLD);
    assert.match(page, /hello from the world, you are (\S+)/, page);
    assert.equal(/you are (\S+)/.exec(page)![1], WORLD_HOST, "the world sees the host's address, not the sandbox's");
  });

  test("its /etc/resolv.conf names 169.254.169.253, and names resolve through the host's forwarder", async () => {
    assert.match(await inside(withEgress, "cat /etc/resolv.conf"), /^nameserver 169\.254\.169\.253$/m);
    const answer = await inside(withEgress, "nslookup world.test 2>&1");
    assert.match(answer, new RegExp(`Address:? *${WORLD.replace(/\./g, "\\.")}`), answer);
    const page = await fetchFrom(withEgress, "world.test");
    assert.match(page, /hello from the world/, page);
    assert.match(await inside(withEgress, "nslookup nowhere.test 2>&1; echo exit=$?"), /NXDOMAIN|can't find/i, "an unknown name is answered, not timed out");
    assert.ok((await gateway.counters()).get(withEgress.network.index)!.dnsQueries >= 3, "the queries are counted");
  });

  test("a restarted server adopts the running sandbox: its DNS sockets are bound again, its routes and connections untouched", async () => {
    // What a server that stops leaves: the chain and shaping stay, the DNS sockets go with the process.
    const fresh = new EgressGateway({ nets, resolvers: [WORLD] });
    await gateway.dns.unbind(withEgress.network.index);
    assert.match(await inside(withEgress, "nslookup -timeout=1 world.test 2>&1; echo exit=$?"), /exit=1/, "no resolver while no server holds the socket");
    await fresh.adopt(withEgress.network, INTERNET, LIMITS);
    try {
      assert.match(await inside(withEgress, "nslookup world.test 2>&1"), new RegExp(`Address:? *${WORLD.replace(/\./g, "\\.")}`));
      assert.match(await fetchFrom(withEgress, WORLD), /hello from the world/);
    } finally {
      await fresh.close();
    }
    await gateway.adopt(withEgress.network, INTERNET, LIMITS); // the gateway the other tests use holds the sockets again
  });

  test("a chain removed from under lmvm is made again; present chains are left alone", async () => {
    assert.equal(await gateway.repair(), 0, "every chain is there: nothing to make");
    const iface = withEgress.network.hostInterface;
    sh(`nft delete element inet ${FIREWALL_TABLE} egress '{ "${iface}" }'; nft flush chain inet ${FIREWALL_TABLE} ${iface}; nft delete chain inet ${FIREWALL_TABLE} ${iface}`);
    await gateway.repair(); // or the gateway's own timer, whichever comes first
    assert.match(sh(`nft list chain inet ${FIREWALL_TABLE} ${iface}`), /ip daddr != @denied meta l4proto tcp accept/);
    assert.match(await fetchFrom(withEgress, WORLD), /hello from the world/);
  });

  test("even with INTERNET_EGRESS, the host's services, the other sandbox and UDP to the internet are refused", async () => {
    const refusedBefore = (await gateway.counters()).get(withEgress.network.index)!.refused;
    for (const target of [withEgress.network.hostIp, without.network.sandboxIp, "10.213.0.1", "169.254.169.254"]) {
      const out = await fetchFrom(withEgress, target, target === withEgress.network.hostIp || target === "10.213.0.1" ? 18099 : 8080);
      assert.doesNotMatch(out, /host service|^up$|hello/m, `${target}: ${out}`);
      assert.match(out, /exit=1/, `${target}: ${out}`);
    }
    // UDP beyond the resolver: a DNS query straight to the world's server gets no answer.
    const direct = await inside(withEgress, `nslookup -timeout=1 world.test ${WORLD} 2>&1; echo exit=$?`);
    assert.doesNotMatch(direct, new RegExp(`Address:? *${WORLD.replace(/\./g, "\\.")}$`, "m"), direct);
    const counters = (await gateway.counters()).get(withEgress.network.index)!;
    assert.ok(counters.refused > refusedBefore, `refused attempts are counted (${refusedBefore} -> ${counters.refused})`);
    assert.ok(counters.bytesOut > 0 && counters.bytesIn > 0, JSON.stringify(counters));
  });

  test("past its connection limit, a new connection's SYNs are held back until one of the open connections closes", async () => {
    // Holders that end their connections by themselves after 12 s (signals from one runsc exec to another's processes are not delivered here).
    const holders = await inside(withEgress, `for i in $(seq ${LIMITS.connections}); do (sleep 12 | nc ${WORLD} 8083) </dev/null >/dev/null 2>&1 & done; sleep 1; netstat -tn | grep -c ':8083 *ESTABLISHED'`);
    assert.equal(holders.trim(), String(LIMITS.connections), holders);
    const blocked = await fetchFrom(withEgress, WORLD);
    assert.doesNotMatch(blocked, /hello/, `connection ${LIMITS.connections + 1} is not let through: ${blocked}`);
    assert.match(blocked, /timed out/, blocked);
    await until(30_000, "the holders to close their connections", async () => !/:8083 *ESTABLISHED/.test(await inside(withEgress, "netstat -tn")), 500);
    const page = await fetchFrom(withEgress, WORLD);
    assert.match(page, /hello from the world/, `once they close, connections go through again: ${page}`);
  });

  test("a sandbox without egress has no route: the test internet and the resolver fail at once", async () => {
    assert.doesNotMatch(await inside(without, "ip route"), /default/);
    const page = await fetchFrom(without, WORLD);
    assert.doesNotMatch(page, /hello/, page);
    assert.match(page, /unreachable|exit=1/i, page);
    assert.match(await inside(without, "nslookup -timeout=1 world.test 2>&1; echo exit=$?"), /exit=1/);
  });

  test("both are shaped to their bandwidth each way, and detach leaves no chain, qdisc or DNS socket", async () => {
    for (const n of [withEgress.network, without.network]) {
      assert.match(sh(`tc qdisc show dev ${n.hostInterface}`), /tbf .*rate 8Mbit/);
      assert.match(sh(`tc -n ${n.name} qdisc show dev ${n.sandboxInterface}`), /tbf .*rate 8Mbit/);
    }
    const net = withEgress.network;
    await gvisor.destroy(withEgress.id);
    await gateway.detach(net);
    await gateway.detach(net); // again: safe
    assert.doesNotMatch(sh(`nft list table inet ${FIREWALL_TABLE}`), new RegExp(`\\b${net.hostInterface}\\b`));
    assert.doesNotMatch(sh(`tc qdisc show dev ${net.hostInterface}`), /tbf/);
    assert.doesNotMatch(sh("ss -Hlnup; ss -Hlntp"), new RegExp(`${net.hostIp.replace(/\./g, "\\.")}:53\\b`));
    assert.equal(gateway.dns.has(net.index), false);
  });
});
