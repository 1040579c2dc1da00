// Simulated hosts for cluster tests (issue 16), all on this machine: each
// host is a network namespace of its own (`lmvmt-c<pid>-<n>`), joined to the
// root namespace by a veth on one bridge (`lmvmtc<pid>`), 172.30.0.0/24: the
// bridge (the server's side) is 172.30.0.1, host n is 172.30.0.(10+n). Each
// agent runs inside its namespace with its own data directory (and so its own
// runsc root) and reaches PostgreSQL through the test cluster's Unix socket,
// which no network namespace hides. A partition is the host's veth taken down.
// Like a real host, each reaches the internet (masqueraded by the root
// namespace): agents make base images and run builds' RUN steps with egress.
// Everything goes at close(), and at process exit if a test forgot. Another
// /24 (`subnet`, its first three octets) lets a second user, such as the
// cluster bench, run beside the e2e test without two bridges holding one IP.

import { execFileSync } from "node:child_process";
import { connect as netConnect, createServer as netServer, type Server as NetServer } from "node:net";
import { join } from "node:path";

export interface SimulatedHost {
  index: number;
  namespace: string;
  ip: string;
  /** Cuts the host off the bridge (a network partition), or mends it. */
  partition(cut: boolean): void;
}

export interface SimulatedHosts {
  bridgeIp: string;
  hosts: SimulatedHost[];
  close(): void;
}

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ["ignore", "ignore", "pipe"], timeout: 10_000 });
const quiet = (cmd: string, args: string[]) => {
  try {
    sh(cmd, args);
  } catch {
    // already gone
  }
};

export function simulatedHosts(count: number, subnet = "172.30.0"): SimulatedHosts {
  const tag = String(process.pid % 100000);
  const bridge = `lmvmtc${tag}`;
  const names = Array.from({ length: count }, (_, i) => ({ ns: `lmvmt-c${tag}-${i}`, outer: `lmvmtc${tag}h${i}`, inner: "eth0" }));
  const close = () => {
    for (const n of names) {
      quiet("ip", ["netns", "pids", n.ns]); // nothing to do with the answer: processes are the test's to end
      quiet("ip", ["link", "del", n.outer]);
      quiet("ip", ["netns", "del", n.ns]);
    }
    quiet("ip", ["link", "del", bridge]);
    quiet("nft", ["delete", "table", "ip", bridge]);
  };
  process.once("exit", close);
  close();
  sh("ip", ["link", "add", bridge, "type", "bridge"]);
  sh("ip", ["addr", "add", `${subnet}.1/24`, "dev", bridge]);
  sh("ip", ["link", "set", bridge, "up"]);
  // The hosts' traffic to anywhere but the bridge leaves with the machine's address (a table of its own, gone at close).
  sh("nft", ["add", "table", "ip", bridge]);
  sh("nft", ["add", "chain", "ip", bridge, "postrouting", "{ type nat hook postrouting priority 100; }"]);
  sh("nft", ["add", "rule", "ip", bridge, "postrouting", "ip", "saddr", `${subnet}.0/24`, "oifname", "!=", bridge, "masquerade"]);
  const hosts = names.map((n, i) => {
    const ip = `${subnet}.${10 + i}`;
    sh("ip", ["netns", "add", n.ns]);
    sh("ip", ["link", "add", n.outer, "type", "veth", "peer", "name", "lmvmtcin", "netns", n.ns]);
    sh("ip", ["link", "set", n.outer, "master", bridge, "up"]);
    sh("ip", ["-n", n.ns, "link", "set", "lmvmtcin", "name", n.inner]);
    sh("ip", ["-n", n.ns, "addr", "add", `${ip}/24`, "dev", n.inner]);
    sh("ip", ["-n", n.ns, "link", "set", n.inner, "up"]);
    sh("ip", ["-n", n.ns, "link", "set", "lo", "up"]);
    sh("ip", ["-n", n.ns, "route", "add", "default", "via", `${subnet}.1`]);
    return {
      index: i,
      namespace: n.ns,
      ip,
      partition: (cut: boolean) => sh("ip", ["link", "set", n.outer, cut ? "down" : "up"]),
    };
  });
  return { bridgeIp: `${subnet}.1`, hosts, close };
}

/**
 * The test PostgreSQL listens on a Unix socket only: a TCP relay on the bridge stands for its
 * port, so agents in their namespaces reach it (and a partition cuts them off it). Answers the
 * relay and the database URL as the agents must use it.
 */
export async function relayDatabase(database: string, bridgeIp: string, port = 15432): Promise<{ relay: NetServer; agentDatabase: string }> {
  const [, dbName, socketDir] = /^postgres:\/\/postgres@\/([^?]+)\?host=(.+)$/.exec(database)!;
  const socketPath = join(decodeURIComponent(socketDir!), ".s.PGSQL.5432");
  const relay = netServer((c) => {
    const u = netConnect(socketPath);
    c.on("error", () => u.destroy());
    u.on("error", () => c.destroy());
    c.pipe(u).pipe(c);
  });
  await new Promise<void>((resolve, reject) => relay.once("error", reject).listen(port, bridgeIp, () => resolve()));
  return { relay, agentDatabase: `postgres://postgres@${bridgeIp}:${port}/${dbName}` };
}
