// One network namespace per sandbox, joined to the host by a veth pair with a
// /30 of its own: the host end is the sandbox's gateway, the other end its
// address. Names carry an index (lmvm-<n>, lmvmh<n>/lmvms<n>) so a restarted
// server can find and remove namespaces it no longer knows (`reap`).

import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DNS_RESOLVER_ADDRESS, METADATA_ADDRESS, hasEgress, type EgressPolicy } from "../core/index.js";
import { runWithin } from "../os/index.js";

/** How long one ip or tc command may take before it is killed and its step fails. */
export const NET_COMMAND_MS = 15_000;

export interface SandboxNetwork {
  index: number;
  /** Name under /var/run/netns. */
  name: string;
  path: string;
  hostInterface: string;
  sandboxInterface: string;
  hostIp: string;
  sandboxIp: string;
  prefixLength: number;
}

const NETNS_DIR = "/var/run/netns";
const PREFIX = "lmvm-";

/**
 * How old a namespace with no veth and no process must be before `sweepStray`
 * takes it for a leftover: longer than `connect` can take to move the veth in
 * (three commands of NET_COMMAND_MS each), so another process's namespace
 * between its `ip netns add` and its veth is never taken.
 */
export const STRAY_NETWORK_AGE_MS = 120_000;

function ipOf(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/**
 * The destinations a sandbox gets a route to, through the host end of its
 * veth: INTERNET_EGRESS, everything (a default route); a connector's rules
 * only, each granted CIDR, the DNS resolver and the instance-metadata
 * address; no egress, the metadata address alone (anything else beyond the
 * link then fails at once with "network unreachable"). Every sandbox reaches
 * its metadata service, as every AWS Lambda MicroVM does.
 */
export function routesFor(policy: EgressPolicy | undefined): string[] {
  const metadata = `${METADATA_ADDRESS}/32`;
  if (!policy || !hasEgress(policy)) return [metadata];
  if (policy.internet) return ["default"];
  const cidrs = new Set<string>();
  for (const rule of policy.rules) for (const c of rule.cidrs) cidrs.add(c.includes("/") ? c : `${c}/32`);
  cidrs.add(`${DNS_RESOLVER_ADDRESS}/32`);
  cidrs.add(metadata);
  return [...cidrs];
}

export class NetworkNamespaces {
  private readonly base: number;
  private readonly capacity: number;
  private readonly taken = new Set<number>();

  /**
   * `subnet` is an IPv4 CIDR carved into /30s, one per sandbox (default
   * 10.211.0.0/16: 16,384 sandboxes). Indexes are unique on the host; which
   * ones this server owns is kept as marker files in `ownerDir`, so `reap`
   * never touches another server's namespaces.
   */
  constructor(subnet = "10.211.0.0/16", private readonly ownerDir?: string) {
    if (ownerDir) mkdirSync(ownerDir, { recursive: true });
    const [addr, bits] = subnet.split("/");
    const parts = addr!.split(".").map(Number);
    this.base = ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
    this.capacity = 2 ** (32 - Number(bits)) / 4;
  }

  describe(index: number): SandboxNetwork {
    const net = this.base + index * 4;
    return {
      index,
      name: `${PREFIX}${index}`,
      path: `${NETNS_DIR}/${PREFIX}${index}`,
      hostInterface: `lmvmh${index}`,
      sandboxInterface: `lmvms${index}`,
      hostIp: ipOf(net + 1),
      sandboxIp: ipOf(net + 2),
      prefixLength: 30,
    };
  }

  /** Namespaces of ours that exist on this host now. */
  existing(): number[] {
    if (!existsSync(NETNS_DIR)) return [];
    return readdirSync(NETNS_DIR).filter((n) => n.startsWith(PREFIX)).map((n) => Number(n.slice(PREFIX.length))).filter(Number.isInteger);
  }

  private allocate(): number {
    const inUse = new Set([...this.taken, ...this.existing()]);
    for (let i = 0; i < this.capacity; i++) {
      if (!inUse.has(i)) {
        this.taken.add(i);
        return i;
      }
    }
    throw new Error("no free sandbox network: every /30 of the subnet is in use");
  }

  async create(): Promise<SandboxNetwork> {
    // Another process (a second server, a test) may take the same index between
    // our look and our `ip netns add`; the add then fails and we take the next.
    for (let attempt = 0; ; attempt++) {
      const net = this.describe(this.allocate());
      try {
        await runWithin(NET_COMMAND_MS, "ip", ["netns", "add", net.name]);
      } catch (err) {
        if (attempt < 20 && existsSync(net.path)) continue;
        this.taken.delete(net.index);
        throw err;
      }
      if (this.ownerDir) writeFileSync(join(this.ownerDir, String(net.index)), "");
      return this.connect(net);
    }
  }

  /**
   * Hands a namespace this instance made over to `to` (its owner marker moves
   * there): a namespace prepared ahead of time (kept under markers of its
   * own, src/runtime/prepared.ts) becomes one of the server's sandbox networks.
   */
  handOver(net: SandboxNetwork, to: NetworkNamespaces): SandboxNetwork {
    if (to.ownerDir) writeFileSync(join(to.ownerDir, String(net.index)), "");
    if (this.ownerDir) rmSync(join(this.ownerDir, String(net.index)), { force: true });
    this.taken.delete(net.index);
    to.taken.add(net.index);
    return to.describe(net.index);
  }

  /** Indexes this server created and has not destroyed. */
  owned(): number[] {
    return this.ownerDir ? readdirSync(this.ownerDir).map(Number).filter(Number.isInteger) : [];
  }

  private async connect(net: SandboxNetwork): Promise<SandboxNetwork> {
    try {
      await runWithin(NET_COMMAND_MS, "ip", ["link", "del", net.hostInterface]).catch(() => undefined); // left by a crash
      await runWithin(NET_COMMAND_MS, "ip", ["link", "add", net.hostInterface, "type", "veth", "peer", "name", net.sandboxInterface]);
      await runWithin(NET_COMMAND_MS, "ip", ["link", "set", net.sandboxInterface, "netns", net.name]);
      await runWithin(NET_COMMAND_MS, "ip", ["addr", "add", `${net.hostIp}/${net.prefixLength}`, "dev", net.hostInterface]);
      await runWithin(NET_COMMAND_MS, "ip", ["link", "set", net.hostInterface, "up"]);
      await runWithin(NET_COMMAND_MS, "ip", ["-n", net.name, "link", "set", "lo", "up"]);
      await runWithin(NET_COMMAND_MS, "ip", ["-n", net.name, "link", "set", net.sandboxInterface, "up"]);
      await this.readdress(net);
      return net;
    } catch (err) {
      await this.destroy(net);
      throw err;
    }
  }

  /**
   * Gives the sandbox end its address again. gVisor takes the address over
   * from the kernel on run and restore, so it has to be put back before every
   * restore into the same namespace.
   *
   * Without egress the sandbox gets no default route, only its link's and
   * one to the metadata address: anything else it sends beyond the host end
   * fails at once with "network unreachable", as under runsc --network=none. With a default route such
   * packets were dropped silently on the host, and a DNS lookup (Python's
   * http.server does one as it binds) sat on a connected UDP socket for its
   * full timeout. A checkpoint taken meanwhile cannot be restored at another
   * address: runsc 20240729 panics restoring a connected UDP socket whose local
   * address the new namespace lacks (tcpip/transport/internal/network
   * Endpoint.Resume; newer runsc closes the socket instead), which surfaced as
   * `containerManager.Restore failed: EOF`.
   *
   * With egress (`policy`), the sandbox gets routes through the host end
   * (routesFor): gVisor takes the namespace's routes at restore, whatever
   * routes the checkpoint was taken with.
   */
  async readdress(net: SandboxNetwork, policy?: EgressPolicy): Promise<void> {
    await runWithin(NET_COMMAND_MS, "ip", ["-n", net.name, "addr", "replace", `${net.sandboxIp}/${net.prefixLength}`, "dev", net.sandboxInterface]);
    // Routes other than the link's (scope link) are the policy's: replaced as a whole.
    await runWithin(NET_COMMAND_MS, "ip", ["-n", net.name, "route", "flush", "scope", "global"]);
    for (const dst of routesFor(policy)) await runWithin(NET_COMMAND_MS, "ip", ["-n", net.name, "route", "replace", dst, "via", net.hostIp, "dev", net.sandboxInterface]);
  }

  /** Removes the namespace and its veth pair; safe to call on what is already gone. */
  async destroy(net: SandboxNetwork): Promise<void> {
    await runWithin(NET_COMMAND_MS, "ip", ["link", "del", net.hostInterface]).catch(() => undefined);
    await runWithin(NET_COMMAND_MS, "ip", ["netns", "del", net.name]).catch(() => undefined);
    if (this.ownerDir) rmSync(join(this.ownerDir, String(net.index)), { force: true });
    this.taken.delete(net.index);
  }

  /**
   * Removes namespaces of this naming that nobody can own: no veth inside, no
   * process in them, and older than `minAgeMs`. A process killed between its
   * `ip netns add` and its owner marker leaves such a namespace, which no
   * restart's `reap` counts as its own. A marker written before the add would
   * not do: another server may take that index meanwhile, and the restart
   * would then remove that server's namespace. Namespaces in use always have
   * their veth (`connect` runs right after the add), so this never takes
   * one. Returns the indexes removed and how many were too young to judge yet.
   */
  async sweepStray(minAgeMs = STRAY_NETWORK_AGE_MS): Promise<{ removed: number[]; young: number }> {
    const removed: number[] = [];
    let young = 0;
    const mine = new Set([...this.taken, ...this.owned()]);
    for (const i of this.existing()) {
      if (mine.has(i)) continue;
      const net = this.describe(i);
      let born: number;
      try {
        born = statSync(net.path).mtimeMs; // an nsfs inode: its times are the namespace's creation
      } catch {
        continue; // removed meanwhile
      }
      const links = await runWithin(NET_COMMAND_MS, "ip", ["-n", net.name, "-o", "link", "show"]).catch(() => undefined);
      if (!links || links.stdout.split("\n").some((l) => l.trim() && !/^\d+: lo[:@]/.test(l))) continue;
      const pids = await runWithin(NET_COMMAND_MS, "ip", ["netns", "pids", net.name]).catch(() => undefined);
      if (!pids || pids.stdout.trim()) continue;
      if (Date.now() - born < minAgeMs) {
        young++;
        continue;
      }
      await runWithin(NET_COMMAND_MS, "ip", ["netns", "del", net.name]).catch(() => undefined);
      if (!existsSync(net.path)) removed.push(i);
    }
    return { removed, young };
  }

  /** Removes the namespaces this server owns but `keep` does not hold, e.g. after a crash. */
  async reap(keep: ReadonlySet<number>): Promise<number[]> {
    const orphans = this.owned().filter((i) => !keep.has(i));
    for (const i of orphans) await this.destroy(this.describe(i));
    return orphans;
  }
}
