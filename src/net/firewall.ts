// The host's side of sandbox isolation and egress, as an nftables table of its
// own (inet lmvm), shared by every lmvm server on the host.
//
// Base chains (installed idempotently by every server as it starts: the table,
// its sets and maps are added, only the base chains are flushed and refilled,
// so per-sandbox state another server keeps there survives):
// - input: a sandbox reaches the host only with replies to connections the
//   host opened (lifecycle hooks, the endpoint proxy), with DNS queries to
//   DNS_RESOLVER_ADDRESS and with TCP to METADATA_ADDRESS port 80, which nat
//   prerouting redirected to its host veth's address (where src/net/dns.ts and
//   src/metadata listen); nothing else, on any address. Its own host veth's
//   address only: a redirect goes to the address of the interface the packet
//   came in on, and a packet sent straight to a host address is no redirect.
// - forward: nothing new reaches a sandbox from elsewhere (another sandbox,
//   the host's networks); what a sandbox starts goes through its own chain,
//   reached through the `egress` verdict map keyed by its host veth's name.
// - nat: DNS_RESOLVER_ADDRESS:53 (udp, tcp) is redirected to the host end of
//   the sandbox's veth, for sandboxes in the `resolving` set; METADATA_ADDRESS
//   tcp 80 likewise, for every sandbox (every sandbox has its instance-metadata
//   service, with or without egress); what sandboxes send out of the host is
//   masqueraded behind the host's address.
// Per sandbox (host veth lmvmh<n>): a chain lmvmh<n> holding its policy's
// grants, then (INTERNET_EGRESS) TCP to any IPv4 address outside the denied
// ranges, then a drop counted in its own counter (refused_lmvmh<n>); a
// connection limit ahead of all of it (`ct count over N`: the SYN is dropped,
// so the client's SYN retries wait for a slot rather than fail).
//
// Every sandbox's host-side veth is named lmvmh<n>, so the wildcard rules
// cover them all, present and future. A packet from a sandbox whose source
// address is not routed back through its own veth is dropped first: a
// sandbox's app has CAP_NET_RAW (runsc --net-raw) and could otherwise forge
// another sandbox's packets.
//
// The text of every rule set is made by pure functions (tested in
// test/unit/egress-rules.test.ts) and applied with one `nft -f` each, so a
// sandbox's chain changes atomically.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DNS_RESOLVER_ADDRESS, METADATA_ADDRESS, type EgressPolicy, type EgressRule } from "../core/index.js";
import { exec, run } from "../os/index.js";

export const FIREWALL_TABLE = "lmvm";
const T = `inet ${FIREWALL_TABLE}`;

/**
 * IPv4 ranges a sandbox never reaches on the internet path; only a connector's
 * rule grants them: "this network", RFC 1918, CGNAT, loopback, link-local
 * (the resolver and metadata addresses included), multicast, reserved and
 * broadcast. The host's own addresses and other sandboxes are refused in
 * input and forward whatever the policy says.
 */
/** Ranges no policy reaches, whatever a connector says (the API refuses to grant them too): this network, loopback, link-local, multicast and reserved. */
export const NEVER_RANGES = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"] as const;

export const DENIED_RANGES = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4"] as const;

/** The base table: added if missing, its base chains flushed and refilled; sets, maps, counters and sandbox chains kept. */
export function baseRules(): string {
  return `table ${T} {
  set denied { type ipv4_addr; flags interval; elements = { ${DENIED_RANGES.join(", ")} } }
  set never { type ipv4_addr; flags interval; elements = { ${NEVER_RANGES.join(", ")} } }
  map egress { type ifname : verdict; }
  map refusals { type ifname : counter; }
  set resolving { type ifname; }
  chain input { type filter hook input priority 0; policy accept; }
  chain forward { type filter hook forward priority 0; policy accept; }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }
}
flush chain ${T} input
flush chain ${T} forward
flush chain ${T} prerouting
flush chain ${T} postrouting
table ${T} {
  chain input {
    iifname "lmvmh*" fib saddr . iif oif missing counter drop
    iifname "lmvmh*" ct state established,related accept
    iifname "lmvmh*" ct status dnat meta l4proto { tcp, udp } th dport 53 accept
    iifname "lmvmh*" ct status dnat ct original ip daddr ${METADATA_ADDRESS} tcp dport 80 accept
    iifname "lmvmh*" counter name iifname map @refusals
    iifname "lmvmh*" counter drop
  }
  chain forward {
    iifname "lmvmh*" fib saddr . iif oif missing counter drop
    oifname "lmvmh*" ct state established,related accept
    oifname "lmvmh*" iifname "lmvmh*" counter name iifname map @refusals
    oifname "lmvmh*" counter drop
    iifname "lmvmh*" ct state established,related accept
    iifname "lmvmh*" ip daddr @never counter name iifname map @refusals
    iifname "lmvmh*" ip daddr @never drop
    iifname "lmvmh*" iifname vmap @egress
    iifname "lmvmh*" counter drop
  }
  chain prerouting {
    iifname @resolving ip daddr ${DNS_RESOLVER_ADDRESS} meta l4proto { tcp, udp } th dport 53 redirect to :53
    iifname "lmvmh*" ip daddr ${METADATA_ADDRESS} tcp dport 80 redirect to :80
  }
  chain postrouting {
    iifname "lmvmh*" oifname != "lmvmh*" masquerade
  }
}
`;
}

function portMatch(rule: EgressRule, proto: "tcp" | "udp"): string {
  return rule.ports ? ` ${proto} dport ${rule.ports.from === rule.ports.to ? rule.ports.from : `${rule.ports.from}-${rule.ports.to}`}` : ` meta l4proto ${proto}`;
}

/** The nft matches one rule grants, one line each (without the verdict). */
export function grantMatches(rule: EgressRule): string[] {
  const out: string[] = [];
  for (const cidr of rule.cidrs) {
    const dst = `ip daddr ${cidr}`;
    // "all" with ports: TCP and UDP to those ports (ports mean nothing to other protocols).
    if (rule.protocol === "all") out.push(rule.ports ? `${dst} meta l4proto { tcp, udp } th dport ${rule.ports.from === rule.ports.to ? rule.ports.from : `${rule.ports.from}-${rule.ports.to}`}` : dst);
    else if (rule.protocol === "icmp") out.push(`${dst} meta l4proto icmp`);
    else out.push(`${dst}${portMatch(rule, rule.protocol)}`);
  }
  return out;
}

export interface ChainLimits {
  /** Outbound TCP connections open at once. */
  connections: number;
}

const IFACE = /^lmvmh\d+$/;

function checkIface(iface: string): void {
  if (!IFACE.test(iface)) throw new Error(`not a sandbox host veth name: ${iface}`);
}

/**
 * The nft script that (re)makes one sandbox's chain and map elements, applied
 * as one transaction: the connection limit, the policy's grants in order, then
 * (internet) TCP to addresses outside DENIED_RANGES, then a counted drop.
 */
export function sandboxRules(iface: string, policy: EgressPolicy, limits: ChainLimits): string {
  checkIface(iface);
  if (!Number.isInteger(limits.connections) || limits.connections < 1) throw new Error(`connections must be a positive integer; got ${limits.connections}`);
  const counter = `refused_${iface}`;
  const lines = [
    `add counter ${T} ${counter}`,
    `add chain ${T} ${iface}`,
    `flush chain ${T} ${iface}`,
    `add rule ${T} ${iface} meta l4proto tcp ct state new ct count over ${limits.connections} counter drop`,
  ];
  for (const rule of policy.rules) for (const m of grantMatches(rule)) lines.push(`add rule ${T} ${iface} ${m} accept`);
  if (policy.internet) lines.push(`add rule ${T} ${iface} ip daddr != @denied meta l4proto tcp accept`);
  lines.push(`add rule ${T} ${iface} counter name "${counter}" drop`);
  lines.push(`add element ${T} egress { "${iface}" : jump ${iface} }`);
  lines.push(`add element ${T} refusals { "${iface}" : "${counter}" }`);
  if (policy.internet || policy.rules.length) lines.push(`add element ${T} resolving { "${iface}" }`);
  else lines.push(`add element ${T} resolving { "${iface}" }`, `delete element ${T} resolving { "${iface}" }`);
  return `${lines.join("\n")}\n`;
}

/** The nft script that removes one sandbox's chain, map elements and counter. Fails when they are not all there (use removeSandboxChain). */
export function removalRules(iface: string): string {
  checkIface(iface);
  // Adding first makes each element present, so the deletes cannot fail on a half-removed sandbox.
  return [
    `add counter ${T} refused_${iface}`,
    `add chain ${T} ${iface}`,
    `add element ${T} egress { "${iface}" : jump ${iface} }`,
    `add element ${T} refusals { "${iface}" : "refused_${iface}" }`,
    `add element ${T} resolving { "${iface}" }`,
    `delete element ${T} egress { "${iface}" }`,
    `delete element ${T} refusals { "${iface}" }`,
    `delete element ${T} resolving { "${iface}" }`,
    `delete chain ${T} ${iface}`,
    `delete counter ${T} refused_${iface}`,
  ].join("\n") + "\n";
}

async function nftScript(script: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "lmvm-nft-"));
  try {
    writeFileSync(join(dir, "rules.nft"), script);
    await run("nft", ["-f", join(dir, "rules.nft")], { signal: AbortSignal.timeout(30_000) });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Installs (or refreshes) the base chains and turns on IPv4 forwarding
 * (net.ipv4.ip_forward=1, which egress needs); throws, naming nft, when they
 * cannot be installed.
 */
export async function installFirewall(): Promise<void> {
  try {
    await nftScript(baseRules());
  } catch (err) {
    throw new Error(`Could not install lmvm's nftables rules, which decide what sandboxes may reach (install nftables; lmvm needs root): ${(err as Error).message}`);
  }
  try {
    writeFileSync("/proc/sys/net/ipv4/ip_forward", "1");
  } catch (err) {
    throw new Error(`Could not turn on IPv4 forwarding (sysctl net.ipv4.ip_forward=1), which sandboxes' egress needs: ${(err as Error).message}`);
  }
}

/** Makes (or remakes) a sandbox's chain; the base chains are refreshed in the same transaction, so a table another server removed comes back. */
export async function applySandboxChain(iface: string, policy: EgressPolicy, limits: ChainLimits): Promise<void> {
  await nftScript(baseRules() + sandboxRules(iface, policy, limits));
}

/** Removes a sandbox's chain, map elements and counter; safe on what is already gone. */
export async function removeSandboxChain(iface: string): Promise<void> {
  try {
    await nftScript(removalRules(iface));
  } catch {
    // No table at all (never installed, or removed by hand): nothing of the sandbox's is left.
  }
}

/** Interfaces that have a chain in the table now (lmvmh<n>); none when there is no table; throws when nft cannot say. */
export async function sandboxChains(): Promise<string[]> {
  const r = await exec("nft", ["-j", "list", "chains", "inet"], { signal: AbortSignal.timeout(10_000) });
  if (r.code !== 0) throw new Error(`nft list chains failed: ${r.tail.slice(-2).join(" ")}`);
  const items = (JSON.parse(r.stdout) as { nftables: { chain?: { name: string; table: string } }[] }).nftables;
  return items.filter((i) => i.chain?.table === FIREWALL_TABLE).map((i) => i.chain!.name).filter((n) => IFACE.test(n));
}

/** Packets each sandbox's chain refused (its counter and the input chain's drops through the refusals map), by interface. */
export async function refusedCounts(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const r = await exec("nft", ["-j", "list", "counters", "table", "inet", FIREWALL_TABLE], { signal: AbortSignal.timeout(10_000) });
  if (r.code !== 0) return out;
  for (const item of (JSON.parse(r.stdout) as { nftables: { counter?: { name: string; packets: number } }[] }).nftables) {
    const m = item.counter && /^refused_(lmvmh\d+)$/.exec(item.counter.name);
    if (m) out.set(m[1]!, item.counter!.packets);
  }
  return out;
}
