// The SandboxRuntime of a host that runs no sandboxes: an explicit adapter
// that refuses, so that "no runtime" can never be read as "no MicroVMs here".

import { Duplex } from "node:stream";
import { NotBegun, RuntimeUnavailable, type GuestProcess, type SandboxFound, type SandboxRuntime } from "./ports.js";

/**
 * The runtime of a host that runs no sandboxes (runsc is not installed, say):
 * it refuses to start any, and cannot tell what is on the host, so recovery
 * keeps every MicroVM as recorded instead of ending it.
 */
export class NoSandboxes implements SandboxRuntime {
  /** `why` completes "this host runs no sandboxes: …" and says what to fix. */
  constructor(readonly why: string) {}

  private refuse(): never {
    throw new RuntimeUnavailable(`this host runs no sandboxes: ${this.why}`);
  }

  async shortage(): Promise<string> {
    this.refuse();
  }
  async run(): Promise<void> {
    this.refuse();
  }
  async suspend(): Promise<void> {
    throw new NotBegun(`this host runs no sandboxes: ${this.why}`);
  }
  async resume(): Promise<void> {
    throw new NotBegun(`this host runs no sandboxes: ${this.why}`);
  }
  async terminate(): Promise<void> {
    this.refuse();
  }
  async inspect(): Promise<SandboxFound> {
    this.refuse();
  }
  async reap(): Promise<void> {
    this.refuse();
  }
  async adopt(): Promise<void> {
    this.refuse();
  }
  async running(): Promise<Set<string>> {
    this.refuse();
  }
  async exitReason(): Promise<undefined> {
    return undefined;
  }
  async condition(): Promise<undefined> {
    return undefined;
  }
  address(): undefined {
    return undefined;
  }
  /** A stream that fails at once with the reason: nothing runs here to connect to. */
  connect(): Duplex {
    const stream = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
    const why = new RuntimeUnavailable(`this host runs no sandboxes: ${this.why}`);
    process.nextTick(() => stream.destroy(why));
    return stream;
  }
  async spawn(): Promise<GuestProcess> {
    this.refuse();
  }
  /** No sandboxes here, so no clones either: nothing to keep or destroy. */
  async warmPools(): Promise<void> {}
  async closeWarmPools(): Promise<void> {}
  async claimWarm(): Promise<undefined> {
    return undefined;
  }
  async unclaimWarm(): Promise<void> {}
}
