// Sandbox resources made before a MicroVM asks for them, so that RunMicrovm
// and ResumeMicrovm do not wait for them: a few network namespaces (veth pair,
// addresses, links up: about 0.3–0.6 s of `ip` calls) and a few formatted
// scratch disks (a sparse ext4 image: truncate and mkfs, about 0.3 s). Taking
// one is instant; a start finding none makes its own, as before.
//
// Bounded: at most `networks` namespaces and `disks` disks (of the size last
// asked for) wait at a time. They are made one at a time in the background,
// after a start has its sandbox (refill()), never during one: the first
// RunMicrovm after the server starts makes its own, the next ones find them
// ready; a server that runs no MicroVM prepares nothing.
//
// Who owns what, and recovery after a crash:
// - A prepared namespace is made by a NetworkNamespaces of its own (`spare`,
//   its owner markers in their own directory, on the server's subnet), with no
//   firewall chain, DNS socket or metadata listener yet: those are attached
//   when a sandbox takes it, and taking it hands its marker over to the
//   server's sandbox networks. recover() (at the server's start, from
//   MicrovmRuntime.reap) removes every namespace a killed server prepared;
//   stop() removes them at a clean stop.
// - A prepared disk is an unmounted image file in `dir`, moved (renamed) into
//   the sandbox's directory when taken. Nothing is mounted until then, so the
//   files are all there is: the constructor removes what a killed server left
//   in `dir`, and stop() removes the rest.

import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { NetworkNamespaces, SandboxNetwork } from "../net/index.js";
import { formatScratchDisk, removeTree } from "../os/index.js";

export interface PreparedOptions {
  /** The server's sandbox networks: a taken namespace is handed over to them. */
  nets: NetworkNamespaces;
  /** Makes the prepared namespaces, on the same subnet as `nets`, its owner markers apart (so that "the server's networks" stays "its sandboxes' networks"). */
  spare: NetworkNamespaces;
  /** Where prepared disk images wait (same filesystem as the sandboxes' directories: taking one is a rename). */
  dir: string;
  /** How many network namespaces to keep ready (default 2). */
  networks?: number;
  /** How many scratch disks to keep ready (default 2). */
  disks?: number;
  log?: (event: Record<string, unknown>) => void;
}

export class PreparedResources {
  private readonly networks: SandboxNetwork[] = [];
  private readonly disks: string[] = [];
  /** The size of the disks kept ready: the one last asked for. */
  private diskMiB: number | undefined;
  private filling: Promise<void> | undefined;
  private stopped = false;
  private made = 0;

  constructor(private readonly opts: PreparedOptions) {
    removeTree(opts.dir); // disks a killed server prepared
    mkdirSync(opts.dir, { recursive: true });
  }

  /** Removes the namespaces a killed server prepared (before any is prepared here). */
  async recover(): Promise<void> {
    await this.opts.spare.reap(new Set(this.networks.map((n) => n.index)));
  }

  /** A prepared network namespace (no egress attached yet), now one of the server's, or undefined when none is ready. */
  takeNetwork(): SandboxNetwork | undefined {
    const net = this.networks.shift();
    return net && this.opts.spare.handOver(net, this.opts.nets);
  }

  /**
   * A prepared disk image of `sizeMiB`, or undefined when none of that size is
   * ready; asking for a new size makes it the size prepared from now on.
   */
  takeDisk(sizeMiB: number): string | undefined {
    if (this.diskMiB !== sizeMiB) {
      for (const d of this.disks.splice(0)) rmSync(d, { force: true });
      this.diskMiB = sizeMiB;
      return undefined;
    }
    return this.disks.shift();
  }

  /** Expect disks of `sizeMiB` (the usual size) before any is asked for. */
  expectDisks(sizeMiB: number | undefined): void {
    this.diskMiB ??= sizeMiB;
  }

  /** Makes what is missing, one at a time, in the background; a fill under way is joined. Never throws. */
  refill(): Promise<void> {
    return (this.filling ??= this.fill()
      .catch((err: unknown) => this.opts.log?.({ level: "warn", msg: "preparing sandbox resources failed", err: (err as Error).message }))
      .finally(() => (this.filling = undefined)));
  }

  private async fill(): Promise<void> {
    const wantNets = this.opts.networks ?? 2;
    const wantDisks = this.opts.disks ?? 2;
    while (!this.stopped && this.networks.length < wantNets) {
      const net = await this.opts.spare.create();
      if (this.stopped) {
        await this.opts.spare.destroy(net);
        return;
      }
      this.networks.push(net);
    }
    while (!this.stopped && this.diskMiB !== undefined && this.disks.length < wantDisks) {
      const size = this.diskMiB;
      const image = join(this.opts.dir, `disk-${process.pid}-${this.made++}.img`);
      try {
        await formatScratchDisk(image, size);
      } catch (err) {
        rmSync(image, { force: true });
        throw err;
      }
      if (this.stopped || size !== this.diskMiB) rmSync(image, { force: true });
      else this.disks.push(image);
    }
  }

  /** Removes everything prepared (the server is stopping), after a fill under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.filling;
    for (const net of this.networks.splice(0)) await this.opts.spare.destroy(net);
    this.disks.splice(0);
    for (const f of readdirSync(this.opts.dir)) rmSync(join(this.opts.dir, f), { force: true });
  }
}
