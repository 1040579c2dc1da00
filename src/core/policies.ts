// Lifecycle policies, applied by a periodic sweep against the clock:
// - maximumDurationInSeconds: a MicroVM is terminated once that long has
//   passed since it started, running and suspended time both counting;
// - idlePolicy.maxIdleDurationSeconds: a RUNNING MicroVM with no inbound
//   traffic for that long is suspended. Traffic is reported by the endpoint
//   proxy through `activity`, kept in memory (the proxy's hot path writes no
//   database row); after a restart every MicroVM starts a fresh idle period;
// - idlePolicy.suspendedDurationSeconds: a MicroVM SUSPENDED for that long is
//   terminated.
// Tests drive `sweep` with a fake clock instead of waiting.

import type { Microvm } from "./model.js";
import type { MicrovmService } from "./microvms.js";
import type { Clock, Store } from "./ports.js";

export interface PolicyAction {
  microvmId: string;
  action: "suspend" | "terminate";
  reason: string;
}

export class LifecyclePolicies {
  private readonly lastActivity = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<PolicyAction[]> | undefined;

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly microvms: MicrovmService,
    private readonly log?: (event: Record<string, unknown>) => void,
  ) {}

  /** Inbound traffic reached the MicroVM: its idle period starts again. */
  activity(microvmId: string): void {
    this.lastActivity.set(microvmId, this.clock.now().getTime());
  }

  /** What the policies require now, without acting. */
  due(vms: Microvm[], now: number): PolicyAction[] {
    const actions: PolicyAction[] = [];
    for (const vm of vms) {
      const limit = vm.config.maximumDurationInSeconds * 1000;
      if (now - vm.startedAt.getTime() >= limit) {
        actions.push({ microvmId: vm.id, action: "terminate", reason: `Terminated: the MicroVM reached its maximumDurationInSeconds (${vm.config.maximumDurationInSeconds} s).` });
        continue;
      }
      const idle = vm.config.idlePolicy;
      if (!idle) continue;
      if (vm.state === "RUNNING") {
        const since = Math.max(vm.updatedAt.getTime(), this.lastActivity.get(vm.id) ?? 0);
        if (now - since >= idle.maxIdleDurationSeconds * 1000) {
          actions.push({ microvmId: vm.id, action: "suspend", reason: `Suspended by its idlePolicy: no inbound traffic for ${idle.maxIdleDurationSeconds} s.` });
        }
      } else if (vm.state === "SUSPENDED" && now - vm.updatedAt.getTime() >= idle.suspendedDurationSeconds * 1000) {
        actions.push({ microvmId: vm.id, action: "terminate", reason: `Terminated by its idlePolicy: suspended for ${idle.suspendedDurationSeconds} s.` });
      }
    }
    return actions;
  }

  /** Applies every policy that is due; one sweep at a time. */
  sweep(): Promise<PolicyAction[]> {
    this.sweeping ??= (async () => {
      const vms = await this.store.microvmsInStates(["RUNNING", "SUSPENDED"]);
      // A MicroVM whose last transition is unsettled may be recorded behind its sandbox: left to the sandbox check, which settles it first.
      const actions = this.due(vms, this.clock.now().getTime()).filter((a) => !this.microvms.isUnsettled(a.microvmId));
      for (const a of actions) {
        try {
          if (a.action === "suspend") await this.microvms.suspend(a.microvmId, a.reason);
          else await this.microvms.terminate(a.microvmId, a.reason);
          this.log?.({ msg: "policy applied", ...a });
        } catch (err) {
          // Most often the MicroVM moved on meanwhile (a user suspended it); the next sweep sees the new state.
          this.log?.({ msg: "policy not applied", ...a, err: (err as Error).message });
        }
        if (a.action === "terminate") this.lastActivity.delete(a.microvmId);
      }
      return actions;
    })().finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  start(intervalMs = 1000): void {
    // A sweep that cannot read the store (PostgreSQL restarting, say) is logged and tried again at the next tick; unhandled, its rejection would end the server.
    this.timer = setInterval(() => void this.sweep().catch((err: Error) => this.log?.({ level: "error", msg: "lifecycle policies not checked: the store could not be read", err: err.message })), intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.sweeping;
  }
}
