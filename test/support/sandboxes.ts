// Frees every sandbox, network namespace (with its firewall chain) and sandbox
// disk a test's data directory owns, MicroVMs' and builds' alike, so no test
// leaves runsc processes, namespaces, nftables chains or mounts behind, even
// when it fails. (A server leaves running MicroVMs' chains in place when it
// stops, as MicroVMs outlive it; a test's MicroVMs do not.)

import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { NetworkNamespaces, removeSandboxChain } from "../../src/net/index.js";
import { unmountUnder } from "../../src/os/index.js";
import { Gvisor } from "../../src/runtime/index.js";

export async function freeSandboxes(dataDir: string): Promise<void> {
  const roots = join(dataDir, "runsc");
  if (existsSync(roots)) {
    for (const root of readdirSync(roots)) {
      const gvisor = new Gvisor({ stateRoot: join(roots, root) });
      for (const s of await gvisor.list().catch(() => [])) await gvisor.destroy(s.id);
    }
  }
  for (const owned of ["networks", "build-networks", "prepared-networks"]) {
    if (!existsSync(join(dataDir, owned))) continue;
    const nets = new NetworkNamespaces(undefined, join(dataDir, owned));
    for (const i of await nets.reap(new Set())) await removeSandboxChain(nets.describe(i).hostInterface);
  }
  unmountUnder(dataDir);
}
