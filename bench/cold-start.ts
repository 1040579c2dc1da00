// The cold-start side of the snapshot bench (bench/snapshots.ts), in its own
// process, as `lmvm server` is on the other side: the same sandbox set-up as
// RunMicrovm (src/runtime/microvms.ts run()), with `runsc run` (the app
// initialising from scratch) where RunMicrovm has `runsc restore`:
// a network namespace (a prepared one, as the server's), its egress attached
// (address, routes, firewall chain, conntrack, shaping) while the bundle and
// the size's scratch disk (a prepared one, as the server's) are made, the
// sandbox with the same limits, capabilities, hooks relay and resolv.conf,
// then its hostname set as RunMicrovm sets it (Gvisor.setHostname, on the
// sandbox's control socket). Not here: the API request and the
// store's writes (milliseconds) and the instance-metadata listener (one bind).
//
// Protocol, one line each way, JSON: {"do":"prepare"} → {"prepared":true};
// {"do":"start"} → {"ip": "..."} once the sandbox runs (the bench then waits
// for the app's first answer); {"do":"stop"} → {"stopped":true};
// {"do":"checkpoint", ...} → sizes of two checkpoints of the running app, with
// and without zero pages; {"do":"exit"}.

import { createInterface } from "node:readline";
import { join } from "node:path";
import { NO_EGRESS, type SandboxLimits } from "../src/core/index.js";
import { EgressGateway, NetworkNamespaces, type SandboxNetwork } from "../src/net/index.js";
import { run } from "../src/os/index.js";
import { Gvisor, PreparedResources, type ImageConfig } from "../src/runtime/index.js";
import { memoryImageSize } from "../src/runtime/snapshots.js";

interface Setup {
  scratch: string;
  rootfs: string;
  config: ImageConfig;
  env: Record<string, string>;
  hooksPort: number;
  limits: SandboxLimits;
}

const setup = JSON.parse(process.argv[2]!) as Setup;
const nets = new NetworkNamespaces(undefined, join(setup.scratch, "networks"));
const prepared = new PreparedResources({ nets, spare: new NetworkNamespaces(undefined, join(setup.scratch, "prepared-networks")), dir: join(setup.scratch, "prepared"), networks: 1, disks: 1 });
const egress = new EgressGateway({ nets });
const gvisor = new Gvisor({ stateRoot: join(setup.scratch, "runsc", "cold") }); // runsc/<root>, where freeSandboxes looks
await egress.install(0);

let round = 0;
let current: { id: string; dir: string; network: SandboxNetwork } | undefined;
const reply = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

async function start(): Promise<string> {
  const id = `bench-cold-${process.pid}-${round++}`;
  const dir = join(setup.scratch, id);
  const network = prepared.takeNetwork() ?? (await nets.create());
  current = { id, dir, network };
  const attached = egress.attach(network, NO_EGRESS, setup.limits);
  attached.catch(() => undefined);
  await gvisor.run({ id, rootfs: setup.rootfs, config: setup.config, env: setup.env, hooksPort: setup.hooksPort, hostname: id, network, dir, logFile: "/dev/null", limits: setup.limits, preparedDisk: (mib) => prepared.takeDisk(mib) }, undefined, attached);
  await gvisor.setHostname(id, setup.rootfs, id);
  return network.sandboxIp;
}

async function stop(): Promise<void> {
  if (!current) return;
  const { id, dir, network } = current;
  current = undefined;
  await gvisor.destroy(id);
  Gvisor.forget({ dir });
  await egress.detach(network);
  await nets.destroy(network);
}

/** Checkpoints the running app twice (--leave-running), without and with --exclude-committed-zero-pages: the bytes of each memory image. */
async function checkpoints(): Promise<{ withZeroPages: number; withoutZeroPages: number }> {
  const { id } = current!;
  const sizes = [];
  for (const flags of [[], ["--exclude-committed-zero-pages"]]) {
    const dir = join(setup.scratch, `checkpoint-${sizes.length}`);
    await run("runsc", ["--root", join(setup.scratch, "runsc", "cold"), "checkpoint", "--leave-running", "--image-path", dir, "--compression=none", ...flags, id]);
    sizes.push(memoryImageSize(dir));
    await run("rm", ["-rf", dir]);
  }
  return { withZeroPages: sizes[0]!, withoutZeroPages: sizes[1]! };
}

const disk = gvisor.diskMiB(setup.limits);
for await (const line of createInterface({ input: process.stdin })) {
  const msg = JSON.parse(line) as { do: string };
  try {
    if (msg.do === "prepare") {
      prepared.expectDisks(disk);
      await prepared.refill();
      reply({ prepared: true });
    } else if (msg.do === "start") reply({ ip: await start() });
    else if (msg.do === "stop") {
      await stop();
      reply({ stopped: true });
    } else if (msg.do === "checkpoint") reply(await checkpoints());
    else if (msg.do === "exit") break;
  } catch (err) {
    reply({ error: (err as Error).message });
  }
}
await stop();
await prepared.stop();
await egress.close();
process.exit(0);
