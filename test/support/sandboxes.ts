// Frees every sandbox, network namespace and sandbox disk a test's data
// directory owns, so no test leaves runsc processes, namespaces or mounts
// behind, even when it fails.

import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { NetworkNamespaces } from "../../src/net/index.js";
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
  if (existsSync(join(dataDir, "networks"))) await new NetworkNamespaces(undefined, join(dataDir, "networks")).reap(new Set());
  unmountUnder(dataDir);
}
