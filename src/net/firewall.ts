// The host's side of sandbox isolation, as an nftables table of its own
// (inet lmvm): a sandbox may answer connections the host opens to it (lifecycle
// hooks, the endpoint proxy), and open none itself: not to the host (its
// services on any address, the control API, the proxy), not to another
// sandbox, not beyond the host. Every sandbox's host-side veth is named
// lmvmh<n>, so one wildcard rule covers them all, present and future.
// Replacing the table is atomic and idempotent: several servers on one host
// install the same rules. A packet from a sandbox whose source address is not
// routed back through its own veth is dropped first: a sandbox's app has
// CAP_NET_RAW (runsc --net-raw) and could otherwise forge another sandbox's
// replies to the host.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "../os/index.js";

export const FIREWALL_TABLE = "lmvm";

const RULES = `
table inet ${FIREWALL_TABLE}
delete table inet ${FIREWALL_TABLE}
table inet ${FIREWALL_TABLE} {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "lmvmh*" fib saddr . iif oif missing counter drop
    iifname "lmvmh*" ct state established,related accept
    iifname "lmvmh*" counter drop
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "lmvmh*" counter drop
    oifname "lmvmh*" ct state established,related accept
    oifname "lmvmh*" counter drop
  }
}
`;

/** Installs (or refreshes) the rules; throws, naming nft, when they cannot be installed. */
export async function installFirewall(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "lmvm-nft-"));
  try {
    writeFileSync(join(dir, "rules.nft"), RULES);
    await run("nft", ["-f", join(dir, "rules.nft")]);
  } catch (err) {
    throw new Error(`Could not install lmvm's nftables rules, which keep sandboxes from opening connections (install nftables; lmvm needs root): ${(err as Error).message}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
