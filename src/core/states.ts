// Legal state transitions, one table per resource. Every state change in the
// core goes through `StateMachine.check`, so an illegal request is refused with
// a message that names the current state and what would have been allowed.

import { StateConflict, type ResourceType } from "./errors.js";
import type { BuildState, ImageState, MicrovmState, VersionState } from "./model.js";

export class StateMachine<S extends string> {
  constructor(
    readonly resourceType: ResourceType,
    private readonly label: string,
    private readonly table: Readonly<Record<S, readonly S[]>>,
  ) {}

  can(from: S, to: S): boolean {
    return this.table[from].includes(to);
  }

  /** States from which `to` may be entered. */
  sources(to: S): S[] {
    return (Object.keys(this.table) as S[]).filter((s) => this.table[s].includes(to));
  }

  /** Throws StateConflict unless `from → to` is legal. `action` reads as "suspend", "update", … */
  check(id: string, from: S, to: S, action: string): void {
    if (this.can(from, to)) return;
    const allowed = this.sources(to);
    throw new StateConflict(
      this.resourceType,
      id,
      `Cannot ${action} ${this.label} ${id}: it is ${from}. ` +
        (allowed.length ? `This is only possible when it is ${allowed.join(" or ")}.` : "This is never possible."),
    );
  }
}

export const imageStates = new StateMachine<ImageState>("MicrovmImage", "MicroVM image", {
  CREATING: ["CREATED", "CREATE_FAILED", "DELETING"],
  CREATED: ["UPDATING", "DELETING"],
  CREATE_FAILED: ["UPDATING", "DELETING"],
  UPDATING: ["UPDATED", "UPDATE_FAILED", "DELETING"],
  UPDATED: ["UPDATING", "DELETING"],
  UPDATE_FAILED: ["UPDATING", "DELETING"],
  DELETING: ["DELETED", "DELETE_FAILED"],
  DELETE_FAILED: ["DELETING"],
  DELETED: [],
});

export const versionStates = new StateMachine<VersionState>("MicrovmImageVersion", "image version", {
  PENDING: ["IN_PROGRESS", "FAILED", "DELETING"],
  // Back to PENDING when a build interrupted by a restart is retried.
  IN_PROGRESS: ["SUCCESSFUL", "FAILED", "PENDING", "DELETING"],
  SUCCESSFUL: ["DELETING"],
  FAILED: ["DELETING"],
  DELETING: ["DELETED", "DELETE_FAILED"],
  DELETE_FAILED: ["DELETING"],
  DELETED: [],
});

export const buildStates = new StateMachine<BuildState>("MicrovmImageBuild", "build", {
  PENDING: ["IN_PROGRESS", "FAILED"],
  IN_PROGRESS: ["SUCCESSFUL", "FAILED", "PENDING"],
  SUCCESSFUL: [],
  FAILED: [],
});

export const microvmStates = new StateMachine<MicrovmState>("Microvm", "MicroVM", {
  PENDING: ["RUNNING", "TERMINATING"],
  RUNNING: ["SUSPENDING", "TERMINATING"],
  // Back to RUNNING when the /suspend hook or the checkpoint fails.
  SUSPENDING: ["SUSPENDED", "RUNNING", "TERMINATING"],
  SUSPENDED: ["RUNNING", "TERMINATING"],
  TERMINATING: ["TERMINATED"],
  TERMINATED: [],
});

/** The version's state follows its builds: any failure fails it, all successes succeed it. */
export function versionStateFromBuilds(builds: readonly BuildState[]): VersionState {
  if (builds.length === 0) return "PENDING";
  const settled = builds.every((s) => s === "SUCCESSFUL" || s === "FAILED");
  if (settled) return builds.includes("FAILED") ? "FAILED" : "SUCCESSFUL";
  if (builds.some((s) => s === "IN_PROGRESS" || s === "SUCCESSFUL" || s === "FAILED")) return "IN_PROGRESS";
  return "PENDING";
}
