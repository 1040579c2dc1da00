// A test "internet" and a test "private network" on this machine, for one test file, so egress
// can be tested without the real internet (issue 13). Traffic never leaves the machine.
//
// Each test file takes a free slot k (0..11; a lock file per slot under /run, held by the test
// process's pid) and gets, with names and addresses no other slot uses:
//
// - the internet: namespace `lmvmt-i<k>`, reached from the host over a veth (host end
//   198.51.100.(16k+1)/30, namespace end .(16k+2)) with a host route to 198.51.100.(16k+8)/29 via
//   it, the way a default route would carry it. In that /29: a web server on :80 at .(16k+10) that
//   records who called (so a test can check the NAT address), a DNS server (dnsmasq) on :53 at
//   .(16k+11) answering for the test names, a UDP echo service on :7 at .(16k+12), and at
//   .(16k+13):80 a relay to a host service of the test's choosing (`apiRelay`: the lmvm API, say,
//   which MicroVMs reach only this way: the host's own addresses are refused to them).
// - the private network: namespace `lmvmt-p<k>`, 10.77.k.0/24 routed via a veth (host end
//   10.77.255.(4k+1)/30, namespace end .(4k+2)), with a host at 10.77.k.10 offering TCP 5432 and
//   6379 (each greets with a banner and records the connection) and a UDP echo on :7.
//
// It never claims 192.0.2.0/24 (the host's network), 203.0.113.0/24 (package mirrors) or lmvm's
// 10.211.0.0/16. Everything goes at close(); what a crashed run left in a slot is removed (by name)
// before the slot is used again. The processes started in the namespaces die with the test process
// (their parent-death signal is SIGKILL, and the services also end when their stdin closes).

import { spawn, execFile, execFileSync, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { connect, createServer as createTcpServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { until, within } from "./deadline.js";
import type { ServicesConfig } from "./netns-services.js";
import { hostResolvers } from "../../src/net/index.js";

const run = promisify(execFile);
// 198.51.100.192/28 and up are left to test/e2e/egress-gateway.test.ts (its .201 and .202).
const SLOTS = 12;
const LOCK_DIR = "/run/lmvm-test-network";
const SERVICES = join(import.meta.dirname, "netns-services.js");

export interface ServiceEvent {
  kind: "http" | "tcp" | "tcp-data" | "udp" | "ready";
  address: string;
  port: number;
  remote?: string;
  method?: string;
  url?: string;
  host?: string;
  text?: string;
  at: number;
}

export interface DnsQuery {
  type: string;
  name: string;
  from: string;
}

export interface TestNetwork {
  slot: number;
  internet: {
    namespace: string;
    /** The host end of the internet veth: the host's own address on this link, and the NAT address a MicroVM's traffic leaves with. */
    hostAddress: string;
    /** The web server (HTTP on port 80). */
    webAddress: string;
    webPort: number;
    /** `webName` resolves to `webAddress` through the test DNS server. */
    webName: string;
    /** A test URL by name and by address. */
    webUrlByName: string;
    webUrlByAddress: string;
    /** The DNS server (UDP and TCP 53): pass it as `lmvm server --dns-resolvers`. */
    dnsAddress: string;
    udpEchoAddress: string;
    udpEchoPort: number;
    /** The addresses the host routes into this namespace (a /29 of 198.51.100.0/24). */
    cidr: string;
    /**
     * A TCP relay on `address`:`port` (80) in the test internet to a host service: `forwardTo`
     * names the service (an http:// URL's host and port); until then connections are closed.
     */
    apiRelay: { address: string; port: number; url: string; forwardTo(url: string): Promise<void> };
  };
  private: {
    namespace: string;
    /** 10.77.k.0/24: what a connector grants. */
    cidr: string;
    hostAddress: string;
    /** The service host: TCP `grantedPort` (5432) and `otherPort` (6379), UDP echo on 7. */
    serviceAddress: string;
    grantedPort: number;
    otherPort: number;
    udpEchoPort: number;
    /** The banners the TCP services greet with. */
    banners: Record<number, string>;
    /** `serviceName` resolves to `serviceAddress` through the test DNS server. */
    serviceName: string;
  };
  /** The resolver address(es) for `lmvm server --dns-resolvers`. */
  resolvers: string[];
  /** The test names the DNS server answers for, and their addresses. */
  names: Record<string, string>;
  /** Everything the services recorded so far (HTTP requests, TCP connections and data, UDP datagrams). */
  events(): ServiceEvent[];
  /** The HTTP requests the web server got. */
  requests(): ServiceEvent[];
  /** The queries the DNS server got. */
  dnsQueries(): DnsQuery[];
  /**
   * Packet counters at the entrance of each namespace (nftables, before anything else sees the
   * packet), for checking that nothing an attacker sent arrived: `internet.foreign` and
   * `private.foreign` count packets whose source is not the host end of the link (all
   * legitimate traffic arrives NATed to it), `*.icmp` ICMP echo requests, `internet.udp` UDP
   * other than DNS, `internet.tcpOther` TCP to ports other than 53 and 80, `private.udp` any
   * UDP, `private.tcpOther` TCP to ports other than 5432, `*.syns` TCP connection attempts (SYNs).
   */
  counters(): Promise<Record<string, number>>;
  /** Runs a command inside one of the namespaces. */
  exec(namespace: string, args: string[], timeoutMs?: number): Promise<{ stdout: string; stderr: string }>;
  close(): Promise<void>;
}

function names(k: number) {
  return {
    inet: `lmvmt-i${k}`,
    priv: `lmvmt-p${k}`,
    inetHost: `ltn${k}ih`,
    inetNs: `ltn${k}in`,
    privHost: `ltn${k}ph`,
    privNs: `ltn${k}pn`,
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function quiet(args: string[]) {
  try {
    execFileSync(args[0]!, args.slice(1), { stdio: "ignore", timeout: 10_000 });
  } catch {
    /* not there */
  }
}

/** Removes, by name, everything slot k may hold: its namespaces' processes, the namespaces, the host veths. */
function cleanSlot(k: number) {
  const n = names(k);
  for (const ns of [n.inet, n.priv]) {
    let pids: string[] = [];
    try {
      pids = execFileSync("ip", ["netns", "pids", ns], { encoding: "utf8", timeout: 10_000, stdio: ["ignore", "pipe", "ignore"] }).split(/\s+/).filter(Boolean);
    } catch {
      /* no such namespace */
    }
    for (const pid of pids) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        /* gone */
      }
    }
    quiet(["ip", "netns", "del", ns]);
  }
  for (const link of [n.inetHost, n.privHost]) quiet(["ip", "link", "del", link]);
}

/** Takes a free slot: a lock file holding this process's pid; a dead holder's leftovers are removed first. */
function takeSlot(): number {
  mkdirSync(LOCK_DIR, { recursive: true });
  for (let k = 0; k < SLOTS; k++) {
    const lock = join(LOCK_DIR, `slot-${k}`);
    try {
      writeFileSync(lock, String(process.pid), { flag: "wx" });
    } catch {
      let holder = 0;
      try {
        holder = Number(readFileSync(lock, "utf8"));
      } catch {
        continue;
      }
      if (holder && alive(holder)) continue;
      // A crashed run's slot: take it over only if no one else does at the same moment.
      try {
        unlinkSync(lock);
        writeFileSync(lock, String(process.pid), { flag: "wx" });
      } catch {
        continue;
      }
    }
    cleanSlot(k);
    return k;
  }
  throw new Error(`all ${SLOTS} test network slots in ${LOCK_DIR} are held by live test processes`);
}

async function sh(args: string[]) {
  try {
    await run(args[0]!, args.slice(1), { timeout: 15_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${args.join(" ")}: ${e.stderr?.trim() || e.message}`);
  }
}

/** Counts, at the entrance of namespace `ns`, what arrives that the tests' legitimate traffic never sends. */
async function watch(ns: string, dev: string, hostEnd: string, tcpOther: string, udp: string) {
  const rules = `table inet lmvmtest {
  counter foreign {}
  counter echoes {}
  counter tcpOther {}
  counter datagrams {}
  counter syns {}
  chain watch {
    type filter hook prerouting priority -300; policy accept;
    iifname "${dev}" ip saddr != ${hostEnd} counter name "foreign"
    iifname "${dev}" icmp type echo-request counter name "echoes"
    iifname "${dev}" ${tcpOther} counter name "tcpOther"
    iifname "${dev}" ${udp} counter name "datagrams"
    iifname "${dev}" tcp flags & (syn | ack) == syn counter name "syns"
  }
}
`;
  await new Promise<void>((resolve, reject) => {
    const child = execFile("ip", ["netns", "exec", ns, "nft", "-f", "-"], { timeout: 15_000 }, (err, _out, stderr) => (err ? reject(new Error(`nft in ${ns}: ${stderr || err.message}`)) : resolve()));
    child.stdin!.end(rules);
  });
}

async function readCounters(ns: string): Promise<Record<string, number>> {
  const { stdout } = await run("ip", ["netns", "exec", ns, "nft", "-j", "list", "counters", "table", "inet", "lmvmtest"], { timeout: 15_000 });
  const out: Record<string, number> = {};
  for (const item of (JSON.parse(stdout) as { nftables: { counter?: { name: string; packets: number } }[] }).nftables) if (item.counter) out[({ echoes: "icmp", datagrams: "udp" } as Record<string, string>)[item.counter.name] ?? item.counter.name] = item.counter.packets;
  return out;
}

/** Creates the test internet and private network for this test file. */
export async function startTestNetwork(): Promise<TestNetwork> {
  const k = takeSlot();
  const n = names(k);
  const b = 16 * k;
  const inet = (i: number) => `198.51.100.${b + i}`;
  const link = (i: number) => `10.77.255.${4 * k + i}`;
  const net = {
    hostAddress: inet(1),
    nsAddress: inet(2),
    webAddress: inet(10),
    dnsAddress: inet(11),
    udpEchoAddress: inet(12),
    relayAddress: inet(13),
    privCidr: `10.77.${k}.0/24`,
    privHost: link(1),
    privNs: link(2),
    service: `10.77.${k}.10`,
  };
  const webName = "web.internet.test";
  const serviceName = "db.private.test";
  const dnsNames: Record<string, string> = {
    [webName]: net.webAddress,
    "udp.internet.test": net.udpEchoAddress,
    [serviceName]: net.service,
  };
  const banners = { 5432: `postgres-test-${k}`, 6379: `redis-test-${k}` };

  // The relay's host side: a unix socket the namespace's relay connects to, piped to the chosen host service.
  const relaySocket = join(LOCK_DIR, `api-relay-${k}.sock`);
  rmSync(relaySocket, { force: true });
  let relayTarget: { host: string; port: number } | undefined;
  const relayConnections = new Set<Socket>();
  const relayServer: Server = createTcpServer((sock) => {
    relayConnections.add(sock);
    sock.on("close", () => relayConnections.delete(sock));
    if (!relayTarget) return void sock.destroy();
    const up = connect(relayTarget.port, relayTarget.host);
    relayConnections.add(up);
    up.on("close", () => relayConnections.delete(up));
    sock.pipe(up).pipe(sock);
    const end = () => (sock.destroy(), up.destroy());
    sock.on("error", end);
    up.on("error", end);
    sock.on("close", end);
    up.on("close", end);
  });
  await within(5_000, "the API relay's socket to listen", new Promise<void>((r, j) => relayServer.once("error", j).listen(relaySocket, () => r())));
  const children: ChildProcess[] = [];
  const events: ServiceEvent[] = [];
  const queries: DnsQuery[] = [];
  let closed = false;
  const closeSync = () => {
    if (closed) return;
    closed = true;
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    for (const c of relayConnections) c.destroy();
    relayServer.close();
    rmSync(relaySocket, { force: true });
    cleanSlot(k);
    try {
      unlinkSync(join(LOCK_DIR, `slot-${k}`));
    } catch {
      /* gone */
    }
  };
  // A test file that ends without close() (a failed before hook) still removes its network.
  process.once("exit", closeSync);

  const start = (ns: string, cmd: string[], onLine: (line: string) => void): ChildProcess => {
    const child = spawn("ip", ["netns", "exec", ns, "setpriv", "--pdeathsig", "KILL", "--", ...cmd], { stdio: ["pipe", "pipe", "pipe"] });
    children.push(child);
    let buffered = "";
    const take = (d: Buffer) => {
      buffered += d.toString("utf8");
      let i: number;
      while ((i = buffered.indexOf("\n")) >= 0) {
        onLine(buffered.slice(0, i));
        buffered = buffered.slice(i + 1);
      }
    };
    child.stdout!.on("data", take);
    child.stderr!.on("data", take);
    child.on("error", () => undefined);
    return child;
  };
  const output: string[] = [];

  try {
    // The internet.
    await sh(["ip", "netns", "add", n.inet]);
    await sh(["ip", "link", "add", n.inetHost, "type", "veth", "peer", "name", n.inetNs, "netns", n.inet]);
    await sh(["ip", "addr", "add", `${net.hostAddress}/30`, "dev", n.inetHost]);
    await sh(["ip", "link", "set", n.inetHost, "up"]);
    const inNs = (ns: string, args: string[]) => sh(["ip", "-n", ns, ...args]);
    await inNs(n.inet, ["link", "set", "lo", "up"]);
    await inNs(n.inet, ["addr", "add", `${net.nsAddress}/30`, "dev", n.inetNs]);
    await inNs(n.inet, ["link", "set", n.inetNs, "up"]);
    for (const a of [net.webAddress, net.dnsAddress, net.udpEchoAddress, net.relayAddress]) await inNs(n.inet, ["addr", "add", `${a}/32`, "dev", "lo"]);
    await inNs(n.inet, ["route", "add", "default", "via", net.hostAddress]);
    await sh(["ip", "route", "add", `${inet(8)}/29`, "via", net.nsAddress, "dev", n.inetHost]);
    // The private network.
    await sh(["ip", "netns", "add", n.priv]);
    await sh(["ip", "link", "add", n.privHost, "type", "veth", "peer", "name", n.privNs, "netns", n.priv]);
    await sh(["ip", "addr", "add", `${net.privHost}/30`, "dev", n.privHost]);
    await sh(["ip", "link", "set", n.privHost, "up"]);
    await inNs(n.priv, ["link", "set", "lo", "up"]);
    await inNs(n.priv, ["addr", "add", `${net.privNs}/30`, "dev", n.privNs]);
    await inNs(n.priv, ["link", "set", n.privNs, "up"]);
    await inNs(n.priv, ["addr", "add", `${net.service}/32`, "dev", "lo"]);
    await inNs(n.priv, ["route", "add", "default", "via", net.privHost]);
    await sh(["ip", "route", "add", net.privCidr, "via", net.privNs, "dev", n.privHost]);
    await watch(n.inet, n.inetNs, net.hostAddress, "tcp dport != { 53, 80 }", "udp dport != 53");
    await watch(n.priv, n.privNs, net.privHost, `tcp dport != 5432`, "meta l4proto udp");

    const ready = new Set<string>();
    const onServiceLine = (line: string) => {
      try {
        const e = JSON.parse(line) as ServiceEvent;
        if (e.kind === "ready") ready.add(`${e.address}:${e.port}`);
        else events.push(e);
      } catch {
        output.push(line);
      }
    };
    const inetServices: ServicesConfig = { http: [{ address: net.webAddress, port: 80 }], udpEcho: [{ address: net.udpEchoAddress, port: 7 }], relay: [{ address: net.relayAddress, port: 80, path: relaySocket }] };
    const privServices: ServicesConfig = {
      tcp: [
        { address: net.service, port: 5432, banner: banners[5432] },
        { address: net.service, port: 6379, banner: banners[6379] },
      ],
      udpEcho: [{ address: net.service, port: 7 }],
    };
    start(n.inet, [process.execPath, SERVICES, JSON.stringify(inetServices)], onServiceLine);
    start(n.priv, [process.execPath, SERVICES, JSON.stringify(privServices)], onServiceLine);
    // dnsmasq as the test's DNS server: it answers only for the test names (no upstream, no
    // /etc/hosts), logs each query to stderr, stays in the foreground and keeps root (a change of
    // user would clear its parent-death signal).
    let dnsReady = false;
    const dnsArgs = [
      "dnsmasq", "--keep-in-foreground", "--no-daemon", "--user=root", "--group=root", "--no-resolv", "--no-hosts", "--no-poll",
      "--bind-interfaces", `--listen-address=${net.dnsAddress}`, "--except-interface=none", "--port=53", "--pid-file=",
      "--log-queries", "--log-facility=-", "--local=/test/", "--conf-file=/dev/null",
      ...Object.entries(dnsNames).map(([name, a]) => `--host-record=${name},${a}`),
    ];
    start(n.inet, dnsArgs, (line) => {
      output.push(line);
      if (/started, version/.test(line)) dnsReady = true;
      const q = /query\[(\w+)\] (\S+) from (\S+)/.exec(line);
      if (q) queries.push({ type: q[1]!, name: q[2]!, from: q[3]! });
    });
    await until(15_000, "the test network's services to listen", () => {
      for (const c of children) if (c.exitCode !== null) throw new Error(`a test network service exited (${c.spawnargs.slice(0, 8).join(" ")}): ${output.join("\n")}`);
      return dnsReady && ready.size === 6;
    });
  } catch (err) {
    closeSync();
    process.off("exit", closeSync);
    throw err;
  }

  return {
    slot: k,
    internet: {
      namespace: n.inet,
      hostAddress: net.hostAddress,
      webAddress: net.webAddress,
      webPort: 80,
      webName,
      webUrlByName: `http://${webName}/`,
      webUrlByAddress: `http://${net.webAddress}/`,
      dnsAddress: net.dnsAddress,
      udpEchoAddress: net.udpEchoAddress,
      udpEchoPort: 7,
      cidr: `${inet(8)}/29`,
      apiRelay: {
        address: net.relayAddress,
        port: 80,
        url: `http://${net.relayAddress}`,
        async forwardTo(url: string) {
          const u = new URL(url);
          relayTarget = { host: u.hostname, port: Number(u.port || 80) };
        },
      },
    },
    private: {
      namespace: n.priv,
      cidr: net.privCidr,
      hostAddress: net.privHost,
      serviceAddress: net.service,
      grantedPort: 5432,
      otherPort: 6379,
      udpEchoPort: 7,
      banners,
      serviceName,
    },
    resolvers: [net.dnsAddress],
    names: dnsNames,
    events: () => [...events],
    requests: () => events.filter((e) => e.kind === "http"),
    dnsQueries: () => [...queries],
    async counters() {
      const out: Record<string, number> = {};
      for (const [prefix, ns] of [["internet", n.inet], ["private", n.priv]] as const) {
        for (const [k, v] of Object.entries(await readCounters(ns))) out[`${prefix}.${k}`] = v;
      }
      return out;
    },
    async exec(namespace, args, timeoutMs = 30_000) {
      const r = await run("ip", ["netns", "exec", namespace, ...args], { timeout: timeoutMs, killSignal: "SIGKILL" });
      return { stdout: r.stdout, stderr: r.stderr };
    },
    async close() {
      if (closed) return;
      await within(10_000, "the test network's services to exit", Promise.all(children.map((c) => {
        if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
        const gone = new Promise<void>((r) => c.once("exit", () => r()));
        c.kill("SIGTERM");
        return gone;
      }))).catch(() => undefined);
      closeSync();
      process.off("exit", closeSync);
    },
  };
}

interface IpAddr { ifname: string; addr_info?: { family: string; local: string; scope: string }[] }

function ipAddrs(): IpAddr[] {
  return JSON.parse(execFileSync("ip", ["-j", "addr"], { encoding: "utf8" })) as IpAddr[];
}

/**
 * This host's own addresses, read now rather than assumed: IPv4 and global
 * IPv6 addresses on its real interfaces (not loopback, lmvm's sandbox veths or
 * the tests' namespaces' veths), and the resolvers of its /etc/resolv.conf. A
 * MicroVM must reach none of them.
 */
export function hostOwnAddresses(): { v4: string[]; v6: string[]; resolvers: string[] } {
  const real = ipAddrs().filter((i) => i.ifname !== "lo" && !/^lmvm/.test(i.ifname));
  const infos = real.flatMap((i) => i.addr_info ?? []);
  return {
    v4: infos.filter((a) => a.family === "inet").map((a) => a.local),
    v6: infos.filter((a) => a.family === "inet6" && a.scope === "global").map((a) => a.local),
    resolvers: hostResolvers(),
  };
}

/** The IPv6 link-local address of the host interface that holds `ipv4` (a sandbox's gateway: its host veth), if it has one. */
export function linkLocalOf(ipv4: string): string | undefined {
  const iface = ipAddrs().find((i) => i.addr_info?.some((a) => a.family === "inet" && a.local === ipv4));
  return iface?.addr_info?.find((a) => a.family === "inet6" && a.scope === "link")?.local;
}
