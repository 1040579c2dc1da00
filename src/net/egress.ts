// Enforcing an EgressPolicy for one sandbox's network namespace, on the host:
// its routes (netns.ts routesFor), its nftables chain (firewall.ts), its DNS
// sockets (dns.ts), its bandwidth shaping (tc), and its instance-metadata
// listener (src/metadata, when the gateway has one: every sandbox gets it). `attach` is idempotent and
// runs after the namespace is made and before each runsc run or restore into
// it (gVisor takes routes at restore); `detach` undoes it and is safe on what
// is gone. The runtime (MicroVMs, build snapshots) and the builder (RUN steps)
// call these; they own which policy a sandbox gets.

import { existsSync, readFileSync } from "node:fs";
import { hasEgress, type EgressPolicy } from "../core/index.js";
import type { MetadataService, MetadataSubject } from "../metadata/index.js";
import { exec, runWithin } from "../os/index.js";
import { NET_COMMAND_MS } from "./netns.js";
import { DnsForwarder, hostResolvers } from "./dns.js";
import { applySandboxChain, baseChainsCurrent, installFirewall, refusedCounts, removeSandboxChain, sandboxChains } from "./firewall.js";
import type { NetworkNamespaces, SandboxNetwork } from "./netns.js";

export interface EgressLimits {
  /** Each way, bytes per second: what the sandbox sends (shaped on its veth inside its namespace) and receives (on the host veth). */
  bandwidthBytesPerSecond: number;
  /** Outbound TCP connections open at once. */
  connections: number;
}

export interface NetworkCounters {
  /** Bytes the sandbox sent (its host veth's received bytes): egress, DNS, and answers to the endpoint and hooks. */
  bytesOut: number;
  /** Bytes the sandbox received (its host veth's sent bytes): replies, DNS answers, endpoint requests and hooks. */
  bytesIn: number;
  /** Packets the firewall refused (new connections and datagrams it was not granted, to the host, other sandboxes or the internet). */
  refused: number;
  /** DNS queries it sent to its resolver. */
  dnsQueries: number;
}

/** How much a shaped link may queue, in seconds at its rate: past the rate, latency rises to this before packets are dropped. */
export const SHAPING_QUEUE_SECONDS = 2;

/**
 * tc arguments (after `tc`) that shape `dev` to `bytesPerSecond`: a token
 * bucket whose burst is 50 ms at the rate (at least 64 KiB, well above a
 * packet) and whose queue holds SHAPING_QUEUE_SECONDS at the rate, so a
 * sender past the rate waits in the queue rather than losing packets.
 */
export function shapingArgs(dev: string, bytesPerSecond: number): string[] {
  if (!Number.isInteger(bytesPerSecond) || bytesPerSecond <= 0) throw new Error(`bandwidth must be a positive integer of bytes per second; got ${bytesPerSecond}`);
  const burst = Math.max(65536, Math.round(bytesPerSecond / 20));
  const limit = Math.round(bytesPerSecond * SHAPING_QUEUE_SECONDS) + burst;
  return ["qdisc", "replace", "dev", dev, "root", "tbf", "rate", `${bytesPerSecond * 8}bit`, "burst", String(burst), "limit", String(limit)];
}

function stat(iface: string, name: "rx_bytes" | "tx_bytes"): number {
  try {
    return Number(readFileSync(`/sys/class/net/${iface}/statistics/${name}`, "utf8").trim()) || 0;
  } catch {
    return 0;
  }
}

export interface EgressGatewayOptions {
  nets: NetworkNamespaces;
  /** Upstream DNS resolvers (default: the host's /etc/resolv.conf nameservers). */
  resolvers?: string[];
  /** The instance-metadata service each attached sandbox gets on its host veth's address (none: the sandbox's 169.254.169.254 connections are refused). */
  metadata?: MetadataService;
}

export class EgressGateway {
  readonly dns: DnsForwarder;
  readonly metadata: MetadataService | undefined;
  private readonly nets: NetworkNamespaces;
  /** Networks attached by this process, by index, with what they were given (to restore a chain someone removed). */
  private readonly attached = new Map<number, { net: SandboxNetwork; policy: EgressPolicy; limits: EgressLimits }>();
  /** The change under way per network index: attach, detach and repair of one network run one at a time. */
  private readonly busy = new Map<number, Promise<unknown>>();
  private watch: (() => void) | undefined;
  /** The base-chain check running now, which every caller meanwhile shares. */
  private baseRun: Promise<void> | undefined;

  constructor(opts: EgressGatewayOptions) {
    this.nets = opts.nets;
    this.metadata = opts.metadata;
    this.dns = new DnsForwarder(opts.resolvers?.length ? opts.resolvers : hostResolvers());
  }

  private serial<T>(index: number, work: () => Promise<T>): Promise<T> {
    const next = (this.busy.get(index) ?? Promise.resolve()).catch(() => undefined).then(work);
    this.busy.set(index, next);
    return next.finally(() => {
      if (this.busy.get(index) === next) this.busy.delete(index);
    });
  }

  /**
   * Installs the base firewall (idempotent, shared with other servers),
   * removes chains whose sandbox veth is gone, and from then on checks every
   * `repairEveryMs` that the chains of this process's sandboxes are still
   * there, making them again if not: a table removed from under lmvm (`nft
   * flush ruleset`, a firewall reload) would otherwise leave sandboxes
   * without their limits until they next restore (with no table, the host
   * forwards anything).
   */
  async install(repairEveryMs = 5_000): Promise<void> {
    await installFirewall();
    await this.sweep();
    if (!this.watch && repairEveryMs > 0) {
      // One check for the base rules and the chains (repair() does both): a second, faster
      // watch of the base rules alone cost every server one `nft` process a second for ever,
      // most of what an idle host's lmvm spent (bench/idle.ts).
      this.watch = watchWithBackoff(() => this.repair(), repairEveryMs);
    }
  }

  /**
   * Makes again the chain of every attached network whose chain is missing (and the base chains
   * with it), and the base chains when they lack this version's rules (an older lmvm server that
   * started meanwhile refilled them without the metadata redirect).
   */
  async repair(): Promise<number> {
    if (!this.attached.size) return 0;
    await this.repairBase();
    const present = new Set(await sandboxChains());
    let made = 0;
    for (const [index, a] of [...this.attached]) {
      if (present.has(a.net.hostInterface)) continue;
      await this.serial(index, async () => {
        const still = this.attached.get(index);
        if (!still || !existsSync(`/sys/class/net/${still.net.hostInterface}`)) return;
        await applySandboxChain(still.net.hostInterface, still.policy, { connections: still.limits.connections });
        made++;
      });
    }
    return made;
  }

  /** Refills the base chains when this process has sandboxes and the chains lack this version's rules. */
  private repairBase(): Promise<void> {
    // One check at a time (each nft call may take up to 10 s): repair() and the watcher share a running one.
    return (this.baseRun ??= (async () => {
      if (this.attached.size && !(await baseChainsCurrent())) await installFirewall();
    })().finally(() => {
      this.baseRun = undefined;
    }));
  }

  /**
   * Enforces `policy` and `limits` on the namespace: its address and routes,
   * its firewall chain, its DNS sockets (with egress), its shaping, and its
   * metadata service serving `subject`'s role (no role without one). Safe to
   * call again on the same namespace (before each restore into it).
   */
  attach(net: SandboxNetwork, policy: EgressPolicy, limits: EgressLimits, subject?: MetadataSubject): Promise<void> {
    return this.serial(net.index, async () => {
      this.attached.set(net.index, { net, policy, limits });
      // Independent steps, each a process or two, run side by side: on RunMicrovm's and ResumeMicrovm's path.
      await allDone([this.nets.readdress(net, policy), forgetConnections(net), this.enforce(net, policy, limits, subject)]);
    });
  }

  /**
   * Takes over a sandbox that is running already (one a previous server
   * process started): its chain, DNS sockets and shaping again, but not its
   * address and routes, which gVisor holds now (giving the address back to the
   * namespace's kernel would have it answer the sandbox's traffic itself).
   * Nothing to do when its veth is gone. A network this process attached with
   * the same policy and limits (a warm-pool clone claimed by a run of the
   * egress it was made with) keeps its chain and shaping (the 5 s repair
   * remakes a chain that went): only its DNS sockets and the metadata
   * service's subject are set, which costs no process.
   */
  adopt(net: SandboxNetwork, policy: EgressPolicy, limits: EgressLimits, subject?: MetadataSubject): Promise<void> {
    return this.serial(net.index, async () => {
      if (!existsSync(`/sys/class/net/${net.hostInterface}`)) return;
      const was = this.attached.get(net.index);
      const standing = was !== undefined && enforced(was.policy) === enforced(policy) && JSON.stringify(was.limits) === JSON.stringify(limits);
      this.attached.set(net.index, { net, policy, limits });
      await this.enforce(net, policy, limits, subject, standing);
    });
  }

  private async enforce(net: SandboxNetwork, policy: EgressPolicy, limits: EgressLimits, subject: MetadataSubject | undefined, standing = false): Promise<void> {
    if (standing) {
      if (hasEgress(policy)) await this.dns.bind(net.index, net.hostIp, net.sandboxIp);
      await this.metadata?.bind(net.index, net.hostIp, net.sandboxIp, subject ?? { sourceArn: "", sessionName: net.name });
      return;
    }
    await allDone([
      applySandboxChain(net.hostInterface, policy, { connections: limits.connections }),
      hasEgress(policy) ? this.dns.bind(net.index, net.hostIp, net.sandboxIp) : this.dns.unbind(net.index),
      this.metadata?.bind(net.index, net.hostIp, net.sandboxIp, subject ?? { sourceArn: "", sessionName: net.name }),
      runWithin(NET_COMMAND_MS, "tc", shapingArgs(net.hostInterface, limits.bandwidthBytesPerSecond)),
      runWithin(NET_COMMAND_MS, "tc", ["-n", net.name, ...shapingArgs(net.sandboxInterface, limits.bandwidthBytesPerSecond)]),
    ]);
  }

  /** Removes what attach made (the veths' qdiscs go with the veths); safe on what is already gone. */
  detach(net: SandboxNetwork): Promise<void> {
    return this.serial(net.index, async () => {
      this.attached.delete(net.index);
      await allDone([
        this.dns.unbind(net.index),
        this.metadata?.unbind(net.index),
        removeSandboxChain(net.hostInterface),
        existsSync(`/sys/class/net/${net.hostInterface}`) ? exec("tc", ["qdisc", "del", "dev", net.hostInterface, "root"], { signal: AbortSignal.timeout(NET_COMMAND_MS) }) : undefined,
        forgetConnections(net),
      ]);
    });
  }

  /** Removes the chains of sandboxes whose host veth no longer exists (left by a killed server, of any server on the host). */
  async sweep(): Promise<void> {
    for (const iface of await sandboxChains()) if (!existsSync(`/sys/class/net/${iface}`)) await removeSandboxChain(iface);
  }

  /** Counters of the networks this process attached, by network index. */
  async counters(): Promise<Map<number, NetworkCounters>> {
    const refused = await refusedCounts();
    const queries = this.dns.queries();
    const out = new Map<number, NetworkCounters>();
    for (const [index, { net }] of this.attached) {
      out.set(index, {
        bytesOut: stat(net.hostInterface, "rx_bytes"),
        bytesIn: stat(net.hostInterface, "tx_bytes"),
        refused: refused.get(net.hostInterface) ?? 0,
        dnsQueries: queries.get(index) ?? 0,
      });
    }
    return out;
  }

  /** Closes the DNS sockets and metadata listeners (the server is stopping; its sandboxes' chains stay for the next start to adopt). */
  async close(): Promise<void> {
    this.watch?.();
    this.watch = undefined;
    await this.dns.close();
    await this.metadata?.close();
  }
}

/**
 * What of a policy the host enforces: a clone made before any run named its
 * connectors (its policy lists none) has the chain, DNS and shaping of a run
 * whose policy grants the same through named connectors.
 */
const enforced = (p: EgressPolicy): string => JSON.stringify({ internet: p.internet, rules: p.rules });

/**
 * Runs `run` every `everyMs`, never two at once: the next run is timed from
 * the end of the previous one, so slow nft calls cannot pile up processes.
 * After a failure the pause doubles (up to `maxMs`), and is `everyMs` again
 * after a success, so a broken nft is not hammered. Returns stop(); the timer
 * does not keep the process alive.
 */
export function watchWithBackoff(run: () => Promise<unknown>, everyMs: number, opts: { maxMs?: number; onSchedule?: (delayMs: number) => void } = {}): () => void {
  const maxMs = opts.maxMs ?? 30_000;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const schedule = (delay: number) => {
    if (stopped) return;
    opts.onSchedule?.(delay);
    timer = setTimeout(async () => {
      let next = everyMs;
      try {
        await run();
      } catch {
        next = Math.min(maxMs, Math.max(everyMs, delay) * 2);
      }
      schedule(next);
    }, delay);
    timer.unref();
  };
  schedule(everyMs);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/**
 * Forgets the kernel's connection-tracking entries of the sandbox's address,
 * both ways. The forward chain accepts established traffic before any
 * sandbox's chain is consulted, and an index (so an address) goes to the next
 * sandbox at once: an entry a previous sandbox left (up to five days for an
 * established TCP connection) would let the new one take over its
 * connections, replies and NAT mapping included. Called when a namespace is
 * attached (before its sandbox starts) and detached. `conntrack` exits 1 when
 * there was nothing to delete.
 */
async function forgetConnections(net: SandboxNetwork): Promise<void> {
  await allDone(["--orig-src", "--orig-dst"].map(async (way) => {
    const r = await exec("conntrack", ["-D", way, net.sandboxIp], { signal: AbortSignal.timeout(10_000) });
    if (r.code !== 0 && r.code !== 1) throw new Error(`conntrack -D ${way} ${net.sandboxIp} failed (${r.code}): ${r.tail.join(" ").slice(0, 300)} (install conntrack)`);
  }));
}

/**
 * Waits for every step, then fails with the first failure: a step still running when another
 * failed must not go on beside what comes next (a detach, say, which would leave its work behind).
 */
async function allDone(steps: (Promise<unknown> | undefined)[]): Promise<void> {
  const failed = (await Promise.allSettled(steps)).find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}
