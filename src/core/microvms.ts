// MicroVMs: RunMicrovm, suspend, resume, terminate and their auth tokens.
// Each change is recorded in the store before the runtime is asked to act,
// so a restart finds every MicroVM in a state that says what was under way.

import { microvmArn, networkConnectorArn, newMicrovmId, MICROVM_ARN_PATTERN, MICROVM_ID_PATTERN, type Scope } from "./arn.js";
import type { ConnectorService } from "./connectors.js";
import type { DefaultEgress } from "./egress.js";
import { DomainError, InvalidInput, NoCapacity, NotFound, StateConflict } from "./errors.js";
import { once } from "./idempotency.js";
import type { ImageService } from "./images.js";
import { checkIngressAtRun, ingressRefusal } from "./ingress.js";
import { MAX_DURATION_SECONDS, type Input } from "./inputs.js";
import type { ImageVersion, Microvm, MicrovmState, Page, PageRequest } from "./model.js";
import { DEFAULT_QUOTAS, format, MEMORY_HOLDING_STATES, microvmMemoryMiB, quotaExceeded, type Quotas } from "./quotas.js";
import { NotBegun, RunHookFailed, RuntimeUnavailable, type Clock, type Ingress, type RuntimeTimings, type SandboxFound, type SandboxRuntime, type Store, type TokenIssuer } from "./ports.js";
import { microvmStates } from "./states.js";

export interface MicrovmServiceDeps {
  store: Store;
  clock: Clock;
  scope: Scope;
  images: ImageService;
  /** NoSandboxes on a host that runs none: never absent, so "no runtime" cannot read as "no MicroVMs". */
  runtime: SandboxRuntime;
  tokens: TokenIssuer;
  /** Builds a MicroVM's public endpoint URL from its id. */
  endpointFor: (microvmId: string) => string;
  log?: (event: Record<string, unknown>) => void;
  timings?: RuntimeTimings;
  /** The account's quotas (default DEFAULT_QUOTAS); RunMicrovm enforces microvm-memory-mib. */
  quotas?: Quotas;
  /** Binds egressNetworkConnectors into the MicroVM's EgressPolicy. */
  connectors: ConnectorService;
  /** What a MicroVM gets when RunMicrovm names no egress connector. */
  defaultEgress: DefaultEgress;
}

export class MicrovmService {
  /** One change at a time per MicroVM; the store records it, this only orders it in-process. */
  private readonly locks = new Map<string, Promise<unknown>>();
  /**
   * Every MicroVM not yet TERMINATED, as last recorded. This process is the
   * store's only writer, so the copy stays exact; the endpoint proxy reads it
   * on every request instead of the database.
   */
  private readonly known = new Map<string, Microvm>();
  /** The standing trouble last written into each RUNNING MicroVM's stateReason. */
  private readonly conditions = new Map<string, string>();
  /**
   * MicroVMs whose transition could not be finished or recorded (the store failed midway: PostgreSQL
   * restarting, say), with what failed: the sandbox check settles each from what the runtime finds
   * once the store answers again, as recovery does after a restart.
   */
  private readonly unsettled = new Map<string, Unsettled>();
  /** The sandbox check under way: one at a time, since settling waits on the store's timeouts during an outage. */
  private checking: Promise<void> | undefined;
  private ingress: Ingress | undefined;

  constructor(private readonly deps: MicrovmServiceDeps) {}

  /** The proxy and shell ingress: told to close a MicroVM's connections before it is checkpointed or freed. */
  attachIngress(ingress: Ingress): void {
    this.ingress = ingress;
  }

  /** A MicroVM that is not TERMINATED, from memory; undefined otherwise. */
  peek(id: string): Microvm | undefined {
    return this.known.get(id);
  }

  /** Gives back a warm clone claimed for an id no MicroVM got; a failure only costs the clone (it is destroyed with its pool). */
  private async unclaim(id: string): Promise<void> {
    await this.deps.runtime.unclaimWarm(id).catch((err: unknown) => this.deps.log?.({ msg: "giving a warm clone back failed", microvmId: id, err: errorText(err) }));
  }

  private remember(vm: Microvm): void {
    if (vm.state !== "RUNNING") this.conditions.delete(vm.id); // a transition rewrote the stateReason
    if (vm.state === "TERMINATED") this.known.delete(vm.id);
    else this.known.set(vm.id, vm);
  }

  /** Runs a runtime operation, timing it. */
  private async timed<T>(operation: "run" | "suspend" | "resume" | "terminate", fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      const result = await fn();
      this.deps.timings?.observe(operation, (performance.now() - started) / 1000, "ok");
      return result;
    } catch (err) {
      this.deps.timings?.observe(operation, (performance.now() - started) / 1000, "error");
      throw err;
    }
  }

  /** Closes the MicroVM's inbound connections; a sandbox with open connections cannot be checkpointed. */
  private async closeIngress(id: string, reason: string): Promise<void> {
    await this.ingress?.close(id, reason).catch((err: unknown) => this.deps.log?.({ msg: "closing connections failed", microvmId: id, err: errorText(err) }));
  }

  private serialize<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.locks.set(id, tail);
    void tail.then(() => {
      if (this.locks.get(id) === tail) this.locks.delete(id);
    });
    return next;
  }

  /** A transition's work after its call has answered: a failure that escapes it (the store unreachable) leaves the MicroVM to settle(). */
  private background(id: string, action: string, fn: () => Promise<void>): void {
    this.serialize(id, fn).catch((err: unknown) => {
      this.markUnsettled(id, `${action} could not be finished: ${errorText(err)}`);
      this.deps.log?.({ level: "error", msg: "microvm transition not finished; it is settled once the store answers again", microvmId: id, action, err: errorText(err) });
    });
  }

  /**
   * Leaves the MicroVM to settle(): its record may be behind what was done, or a write may have
   * landed whose answer was lost. `records` are the records settle() may find and still decide on
   * (by default, the one last known here, or those an earlier failure of this transition named).
   */
  private markUnsettled(id: string, why: string, records?: ExpectedRecord[]): void {
    const known = this.known.get(id);
    const expected = records ?? this.unsettled.get(id)?.records ?? (known ? [{ state: known.state, updatedAt: known.updatedAt.getTime() }] : undefined);
    this.unsettled.set(id, { why, ...(expected ? { records: expected } : {}) });
  }

  private idOf(identifier: string): string {
    if (MICROVM_ID_PATTERN.test(identifier)) return identifier;
    // Only arn:aws:lambda:<region>:<account>:microvm:<id>: the form the authoriser names (ResourceNames.microvm).
    const arn = MICROVM_ARN_PATTERN.exec(identifier);
    if (arn) {
      if (arn[1] === this.deps.scope.region && arn[2] === this.deps.scope.accountId) return arn[3]!;
      throw new NotFound("Microvm", identifier, `MicroVM '${identifier}' does not exist in this region and account.`);
    }
    throw new InvalidInput(`'microvmIdentifier' must be a MicroVM id such as microvm-0123456789abcdef0, as returned by run-microvm; got '${identifier}'.`);
  }

  async get(identifier: string): Promise<Microvm> {
    const id = this.idOf(identifier);
    const vm = await this.deps.store.getMicrovm(id);
    if (!vm || vm.accountId !== this.deps.scope.accountId) {
      throw new NotFound("Microvm", id, `MicroVM '${id}' does not exist. List MicroVMs with list-microvms.`);
    }
    return vm;
  }

  async list(input: Input<"ListMicrovms">, page: PageRequest): Promise<Page<Microvm>> {
    const filter: { imageArn?: string; imageVersion?: string } = {};
    if (input.imageIdentifier) {
      const arn = this.deps.images.arnOf(input.imageIdentifier);
      if (!arn) return { items: [] };
      filter.imageArn = arn;
    }
    if (input.imageVersion) filter.imageVersion = input.imageVersion;
    return this.deps.store.listMicrovms(this.deps.scope.accountId, filter, page);
  }

  /**
   * Refuses a MicroVM of `version` that would take the account's memory past
   * its quota: the baseline memory of every MicroVM in MEMORY_HOLDING_STATES,
   * plus this one's. Inside RunMicrovm's transaction, so concurrent runs
   * cannot both take the last room.
   */
  private async checkMemoryQuota(store: Store, version: ImageVersion): Promise<void> {
    const limit = (this.deps.quotas ?? DEFAULT_QUOTAS)["microvm-memory-mib"];
    const want = microvmMemoryMiB(version);
    const holding = (await store.microvmsInStates([...MEMORY_HOLDING_STATES])).filter((vm) => vm.accountId === this.deps.scope.accountId);
    const sizes = new Map<string, number>();
    let used = 0;
    for (const vm of holding) {
      const key = `${vm.imageArn}\u0000${vm.imageVersion}`;
      let mib = sizes.get(key);
      if (mib === undefined) {
        const v = await store.getVersion(vm.imageArn, vm.imageVersion);
        mib = v ? microvmMemoryMiB(v) : 0;
        sizes.set(key, mib);
      }
      used += mib;
    }
    if (used + want <= limit) return;
    throw quotaExceeded(
      "microvm-memory-mib",
      limit,
      `This MicroVM needs ${format.n(want)} MiB (the baseline memory of version ${version.version} of ${version.imageArn}), and this account's ` +
        `${holding.length} PENDING, RUNNING, SUSPENDING and SUSPENDED MicroVMs already hold ${format.n(used)} MiB, which would make ${format.n(used + want)} MiB. ` +
        "Terminate MicroVMs you no longer need (suspended ones count too).",
      "Microvm",
      { unit: "MiB" },
    );
  }

  async run(input: Input<"RunMicrovm">): Promise<Microvm> {
    const { store, clock, scope } = this.deps;
    const image = await this.deps.images.resolve(input.imageIdentifier);
    const versionId = input.imageVersion ?? image.latestActiveImageVersion;
    if (!versionId) {
      throw new StateConflict("MicrovmImage", image.arn, `MicroVM image ${image.arn} has no SUCCESSFUL, ACTIVE version to run yet (it is ${image.state}). Wait for its build to finish, or pass --image-version.`);
    }
    const { version } = await this.deps.images.getVersion(image.arn, versionId);
    if (version.state !== "SUCCESSFUL") {
      throw new StateConflict("MicrovmImageVersion", `${image.arn}:${versionId}`, `Cannot run version ${versionId} of ${image.arn}: it is ${version.state}; only a SUCCESSFUL version can run.`);
    }
    if (version.status !== "ACTIVE") {
      throw new StateConflict("MicrovmImageVersion", `${image.arn}:${versionId}`, `Cannot run version ${versionId} of ${image.arn}: it is INACTIVE. Make it ACTIVE with update-microvm-image-version.`);
    }
    const unrunnable = this.deps.runtime.unrunnable?.(version);
    if (unrunnable) throw new StateConflict("MicrovmImageVersion", `${image.arn}:${versionId}`, `Cannot run version ${versionId} of ${image.arn} on this server: ${unrunnable}`);
    const ingress = checkIngressAtRun(scope.region, input.ingressNetworkConnectors);
    // Omitted, the documentation's default (the public internet) or the operator's --default-egress; an empty list is no egress.
    const named = input.egressNetworkConnectors ?? (this.deps.defaultEgress === "internet" ? [networkConnectorArn(scope.region, "INTERNET_EGRESS")] : []);
    const connectors = this.deps.connectors;
    // Checked again in the transaction below; checked here first so that a refused run holds no host room (shortage() reserves it).
    const replay = input.clientToken ? await store.getIdempotencyRecord(scope.accountId, "RunMicrovm", input.clientToken) : undefined;
    const bound = replay ? undefined : await connectors.bind(named, "egressNetworkConnectors");
    if (!replay) await this.checkMemoryQuota(store, version);
    const runtime = this.deps.runtime;
    const short = await runtime.shortage(version).catch((err: unknown) => {
      throw err instanceof RuntimeUnavailable ? new NoCapacity(`This lmvm server cannot run MicroVMs: ${err.message}`) : err;
    });
    if (short) throw new NoCapacity(`This host has no room for another MicroVM right now: ${short}. Terminate or suspend some, or retry later.`);

    // A warm clone, when one fits, was made for an id of its own (its hostname is that id already):
    // the MicroVM gets that id. Ids are random either way. A replay makes no MicroVM, so claims none.
    const logging = !(input.logging ?? version.config.logging)?.disabled;
    const reserved = bound ? await runtime.claimWarm(version, bound.policy, logging) : undefined;
    let id: string;
    try {
      ({ id } = await once(store, clock, { accountId: scope.accountId, operation: "RunMicrovm", clientToken: input.clientToken }, input, async (tx) => {
        await this.checkMemoryQuota(tx, version);
        // Bound again inside the transaction, so a connector deleted meanwhile is not bound; the policy is kept for the MicroVM's life.
        const egress = await connectors.bind(named, "egressNetworkConnectors", tx);
        // run() checks that the clone still fits this policy (a connector changed meanwhile), and restores otherwise.
        const id = reserved ?? newMicrovmId();
        const now = clock.now();
        await tx.insertMicrovm({
          id,
          accountId: scope.accountId,
          imageArn: image.arn,
          imageVersion: versionId,
          state: "PENDING",
          endpoint: this.deps.endpointFor(id),
          config: {
            ingressNetworkConnectors: ingress,
            egressNetworkConnectors: egress.arns,
            egress: egress.policy,
            ...(input.executionRoleArn ? { executionRoleArn: input.executionRoleArn } : {}),
            ...(input.idlePolicy ? { idlePolicy: input.idlePolicy } : {}),
            ...(input.logging ? { logging: input.logging } : {}),
            ...(input.runHookPayload !== undefined ? { runHookPayload: input.runHookPayload } : {}),
            maximumDurationInSeconds: input.maximumDurationInSeconds ?? MAX_DURATION_SECONDS,
          },
          startedAt: now,
          updatedAt: now,
        });
        return { id };
      }));
    } catch (err) {
      if (reserved) await this.unclaim(reserved); // no MicroVM has its id: the clone goes back to its pool
      throw err;
    }
    // A retried request answered with the MicroVM an earlier one made: the id stays unused.
    if (reserved && id !== reserved) await this.unclaim(reserved);
    // The MicroVM is recorded; one that cannot be read back now (the store gone since) is settled later, not left PENDING.
    const vm = await this.get(id).catch((err: unknown) => {
      if (!(err instanceof DomainError)) this.markUnsettled(id, `Starting the MicroVM could not begin: ${errorText(err)}`);
      throw err;
    });
    this.remember(vm);
    if (vm.state === "PENDING") {
      this.background(id, "Starting the MicroVM", async () => {
        const current = await this.get(id);
        if (current.state !== "PENDING") return;
        try {
          await this.timed("run", () => runtime.run(current, version));
          await this.move(current, "RUNNING");
        } catch (err) {
          // A failed /run ends the MicroVM (TERMINATING, then TERMINATED), as on AWS, with the service's reason.
          await this.fail(current, err instanceof RunHookFailed ? err.message : `Starting the MicroVM failed: ${errorText(err)}`);
        }
      });
    }
    return vm;
  }

  /**
   * Records a transition; refuses it with the current state named when illegal. A store that fails
   * (not a refusal) leaves the MicroVM unsettled: whatever the caller did or was about to do, and
   * whether this write landed with its answer lost, is then decided by settle().
   */
  private async move(vm: Microvm, to: MicrovmState, action = `move to ${to}`, reason?: string): Promise<Microvm> {
    const since = this.deps.clock.now().getTime();
    return this.recordMove(vm, to, action, reason).catch((err: unknown) => {
      // The record is as it was, or `to` from this write if it landed.
      const records = [{ state: vm.state, updatedAt: vm.updatedAt.getTime() }, { state: to, since }];
      if (!(err instanceof DomainError)) this.markUnsettled(vm.id, `Recording ${action} (${vm.state} to ${to}) failed: ${errorText(err)}`, records);
      throw err;
    });
  }

  private async recordMove(vm: Microvm, to: MicrovmState, action: string, reason?: string): Promise<Microvm> {
    return this.deps.store.transaction(async (tx) => {
      const current = await tx.getMicrovm(vm.id);
      if (!current) throw new NotFound("Microvm", vm.id);
      microvmStates.check(vm.id, current.state, to, action);
      const now = this.deps.clock.now();
      const patch: Partial<Microvm> = { state: to, stateReason: reason, updatedAt: now };
      if (to === "TERMINATED") patch.terminatedAt = now;
      await tx.updateMicrovm(vm.id, patch);
      return { ...current, ...patch };
    }).then((moved) => {
      this.remember(moved);
      return moved;
    });
  }

  /** Tears a MicroVM down after a failure, keeping the reason users will read. */
  private async fail(vm: Microvm, reason: string): Promise<void> {
    this.deps.log?.({ msg: "microvm failed", microvmId: vm.id, reason });
    const terminating = await this.move(vm, "TERMINATING", "terminate", reason);
    await this.closeIngress(vm.id, reason);
    try {
      await this.deps.runtime.terminate(terminating);
    } finally {
      await this.move(terminating, "TERMINATED", "terminate", reason);
    }
  }

  async suspend(identifier: string, reason?: string): Promise<void> {
    const vm = await this.settled(identifier);
    const suspending = await this.move(vm, "SUSPENDING", "suspend", reason);
    this.background(vm.id, "Suspending the MicroVM", async () => {
      try {
        await this.closeIngress(vm.id, reason ?? "The MicroVM is being suspended.");
        await this.timed("suspend", () => this.deps.runtime.suspend(suspending));
        await this.move(suspending, "SUSPENDED", "move to SUSPENDED", reason);
      } catch (err) {
        if (err instanceof NotBegun) {
          await this.move(suspending, "RUNNING", "resume", `Suspending could not begin, so the MicroVM kept running: ${err.message}`);
          return;
        }
        // A failed checkpoint can take the sandbox down with it; then the MicroVM is lost, not running.
        // A host that cannot be inspected (unreached, its lease lost) is neither presumed running nor dead: the
        // MicroVM stays SUSPENDING, unsettled, until settle() can inspect it (a guessed RUNNING would have been
        // terminated by the sandbox check, its checkpoint deleted, if the suspend had in fact finished).
        const left = await this.deps.runtime.inspect(suspending).catch((e: unknown) => {
          throw new Error(`suspending failed (${errorText(err)}) and its sandbox could not be inspected: ${errorText(e)}`);
        });
        // A suspend that finished where its answer was lost (its host cut off meanwhile) left the checkpoint: SUSPENDED, as recovery decides.
        if (!left.running && left.checkpoint) await this.move(suspending, "SUSPENDED", "move to SUSPENDED", reason);
        else if (!left.running) await this.fail({ ...suspending }, `Suspending failed and the sandbox did not survive it: ${errorText(err)}`);
        else await this.move(suspending, "RUNNING", "resume", `Suspending failed, so the MicroVM kept running: ${errorText(err)}`);
      }
    });
  }

  /** Resumes a SUSPENDED MicroVM and resolves once it is RUNNING (the proxy's auto-resume waits on this). */
  async resume(identifier: string): Promise<void> {
    const vm = await this.get(identifier);
    microvmStates.check(vm.id, vm.state, "RUNNING", "resume");
    await this.serialize(vm.id, async () => {
      // A resume done whose record could not say so is settled first (RUNNING then), so the runtime is not asked to resume it twice.
      if (this.unsettled.has(vm.id)) await this.settleLocked(vm.id);
      const current = await this.get(vm.id);
      if (current.state === "RUNNING") return;
      microvmStates.check(vm.id, current.state, "RUNNING", "resume");
      const { version } = await this.deps.images.getVersion(current.imageArn, current.imageVersion);
      const short = await this.deps.runtime.shortage(version).catch((err: unknown) => {
        throw err instanceof RuntimeUnavailable ? new StateConflict("Microvm", vm.id, `MicroVM ${vm.id} stays SUSPENDED: ${err.message}`) : err;
      });
      if (short) {
        throw new StateConflict("Microvm", vm.id, `MicroVM ${vm.id} stays SUSPENDED: this host has no room to resume it right now: ${short}. Terminate or suspend other MicroVMs, or retry later.`);
      }
      try {
        await this.timed("resume", () => this.deps.runtime.resume(current));
      } catch (err) {
        if (err instanceof NotBegun) throw new StateConflict("Microvm", vm.id, `MicroVM ${vm.id} stays SUSPENDED, its checkpoint kept: ${err.message}`);
        await this.fail(current, `Resuming failed: ${errorText(err)}`).catch(async (e: unknown) => {
          // Ended and recorded, though its host could not be told (killed mid-resume): answered as any failed resume.
          if ((await this.deps.store.getMicrovm(vm.id).catch(() => undefined))?.state === "TERMINATED") return;
          this.markUnsettled(vm.id, `Resuming failed (${errorText(err)}), and ending the MicroVM could not be recorded: ${errorText(e)}`);
          throw e;
        });
        throw new StateConflict("Microvm", vm.id, `Resuming MicroVM ${vm.id} failed, so it was terminated: ${errorText(err)}`);
      }
      // Resumed: a record that cannot say so now (the store unreachable) is settled from the sandbox later.
      await this.move(current, "RUNNING").catch((err: unknown) => {
        this.markUnsettled(vm.id, `Resuming the MicroVM could not be recorded: ${errorText(err)}`);
        throw err;
      });
    });
  }

  async terminate(identifier: string, reason?: string): Promise<void> {
    const vm = await this.settled(identifier);
    const terminating = await this.move(vm, "TERMINATING", "terminate", reason);
    this.background(vm.id, "Terminating the MicroVM", async () => {
      try {
        await this.closeIngress(vm.id, reason ?? "The MicroVM is being terminated.");
        await this.timed("terminate", async () => this.deps.runtime.terminate(terminating));
      } catch (err) {
        this.deps.log?.({ msg: "terminate failed; the MicroVM is recorded TERMINATED", microvmId: vm.id, err: errorText(err) });
      }
      await this.move(terminating, "TERMINATED", "terminate", reason);
    });
  }

  /**
   * Finds RUNNING MicroVMs whose sandbox died under them (the app exhausted its
   * memory, the sandbox was killed) and terminates them with the reason, so
   * their state says what happened instead of RUNNING. With no RUNNING
   * MicroVM there is nothing to look at: the runtime is not asked at all, so
   * an idle server spawns no `runsc list`.
   */
  checkSandboxes(): Promise<void> {
    this.checking ??= this.checkOnce().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  private async checkOnce(): Promise<void> {
    const runtime = this.deps.runtime;
    for (const id of [...this.unsettled.keys()]) {
      await this.settle(id).catch((err: unknown) => this.deps.log?.({ msg: "microvm not settled yet", microvmId: id, err: errorText(err) }));
    }
    if (![...this.known.values()].some((vm) => vm.state === "RUNNING")) return;
    let alive: Set<string>;
    try {
      alive = await runtime.running();
    } catch (err) {
      if (err instanceof RuntimeUnavailable) return; // nothing to watch on this host
      throw err;
    }
    for (const vm of this.known.values()) {
      if (this.unsettled.has(vm.id)) continue; // its record may be behind: settle() decides, once the store answers
      if (vm.state === "RUNNING" && alive.has(vm.id) && !this.locks.has(vm.id)) await this.noteCondition(vm);
      if (vm.state !== "RUNNING" || alive.has(vm.id) || this.locks.has(vm.id)) continue;
      await this.serialize(vm.id, async () => {
        const current = this.known.get(vm.id);
        if (current?.state !== "RUNNING" || (await runtime.running()).has(vm.id)) return;
        const why = (await runtime.exitReason(current).catch(() => undefined)) ?? "its sandbox stopped unexpectedly";
        await this.fail(current, `The MicroVM stopped: ${why}.`);
      });
    }
  }

  /**
   * Puts a live sandbox's standing trouble (a full disk) in its RUNNING
   * MicroVM's stateReason, and takes it out once the trouble is over. A reason
   * a transition wrote (a failed suspend's) stands: the trouble neither
   * overwrites it nor, once over, clears it.
   */
  private async noteCondition(vm: Microvm): Promise<void> {
    const condition = await this.deps.runtime.condition(vm).catch(() => undefined);
    const noted = this.conditions.get(vm.id);
    if (condition === noted) return;
    await this.serialize(vm.id, () =>
      this.deps.store.transaction(async (tx) => {
        const current = await tx.getMicrovm(vm.id);
        if (current?.state !== "RUNNING") return;
        if (condition) this.conditions.set(vm.id, condition);
        else this.conditions.delete(vm.id);
        if (current.stateReason !== undefined && current.stateReason !== noted) return; // a transition's reason
        const patch: Partial<Microvm> = { stateReason: condition, updatedAt: this.deps.clock.now() };
        await tx.updateMicrovm(vm.id, patch);
        this.remember({ ...current, ...patch });
      }),
    );
  }

  /**
   * Finishes or undoes a transition whose work failed midway (unsettled), from
   * what the runtime finds, as recovery does after a restart: a sandbox that
   * runs makes the MicroVM RUNNING, a checkpoint a SUSPENDING one SUSPENDED, a
   * SUSPENDED one without a running sandbox stays so; otherwise it ends, with
   * what failed as its reason. Throws (and stays unsettled) while the store or
   * the runtime cannot answer.
   */
  private settle(id: string): Promise<void> {
    return this.serialize(id, () => this.settleLocked(id));
  }

  /** settle()'s work, for a caller that holds the MicroVM's lock (resume, and suspend and terminate before they act). */
  private async settleLocked(id: string): Promise<void> {
    const entry = this.unsettled.get(id);
    if (!entry) return; // settled meanwhile (by the sandbox check, or a call that waited on this lock)
    const why = entry.why;
    const vm = await this.deps.store.getMicrovm(id);
    if (!vm || vm.state === "TERMINATED") {
      this.unsettled.delete(id);
      if (vm) this.remember(vm);
      return;
    }
    const expected = (r: ExpectedRecord) => r.state === vm.state && ("since" in r ? vm.updatedAt.getTime() >= r.since : vm.updatedAt.getTime() === r.updatedAt);
    if (entry.records && !entry.records.some(expected)) {
      // Written since the failure by someone else (recovery, a server that took over): that record stands.
      this.unsettled.delete(id);
      this.remember(vm);
      this.deps.log?.({ msg: "microvm not settled: its record moved on since its transition failed", microvmId: id, state: vm.state, why });
      return;
    }
    try {
      const found = vm.state === "RUNNING" ? { running: true, checkpoint: false } : await this.deps.runtime.inspect(vm);
      if (vm.state === "TERMINATING") {
        await this.deps.runtime.terminate(vm).catch(() => undefined);
        await this.move(vm, "TERMINATED", "terminate", vm.stateReason);
      } else if (found.running && vm.state !== "RUNNING") await this.move(vm, "RUNNING", "resume", vm.state === "SUSPENDING" ? `Suspending failed, so the MicroVM kept running: ${why}` : undefined);
      else if (vm.state === "SUSPENDING" && found.checkpoint) await this.move(vm, "SUSPENDED");
      else if (vm.state === "SUSPENDED" && !found.checkpoint) await this.fail(vm, `The MicroVM was lost: neither its sandbox nor its checkpoint was found after this: ${why}`);
      else if (vm.state === "PENDING" || vm.state === "SUSPENDING") await this.fail(vm, `The MicroVM stopped: ${why}`);
      else this.remember(vm); // RUNNING (the sandbox check looks at it), or SUSPENDED on its checkpoint: as recorded
    } catch (err) {
      // Still unsettled (a write of this settling failed too, and noted the records it may have left): what first failed stays the reason.
      const now = this.unsettled.get(id);
      if (now) this.unsettled.set(id, { ...now, why });
      throw err;
    }
    this.unsettled.delete(id);
    this.deps.log?.({ msg: "microvm settled", microvmId: id, was: vm.state, why });
  }

  /** Whether a transition of this MicroVM is waiting to be settled (the lifecycle policies leave it alone until then). */
  isUnsettled(id: string): boolean {
    return this.unsettled.has(id);
  }

  /**
   * The MicroVM as recorded, once a transition left unsettled has been settled: the
   * record of one may be behind its sandbox (a resume done but not recorded), so
   * acting on it would act twice. Throws while the store or the runtime cannot answer.
   */
  private async settled(identifier: string): Promise<Microvm> {
    const vm = await this.get(identifier);
    if (!this.unsettled.has(vm.id)) return vm;
    await this.settle(vm.id);
    return this.get(vm.id);
  }

  /**
   * Brings every MicroVM's record in line with what is on the host after a
   * restart: live sandboxes are adopted, half-done transitions are finished
   * or undone, lost ones are TERMINATED with the reason, and the runtime frees
   * whatever belongs to no MicroVM. A MicroVM the runtime cannot inspect (a
   * host that runs no sandboxes, runsc failing) is never ended: it keeps its
   * recorded state, and then nothing is reaped, since what belongs to it is
   * unknown.
   */
  async recover(): Promise<void> {
    const runtime = this.deps.runtime;
    const live = await this.deps.store.microvmsInStates(["PENDING", "RUNNING", "SUSPENDING", "SUSPENDED", "TERMINATING"]);
    const kept: Microvm[] = [];
    const uninspected: string[] = [];
    for (const vm of live) {
      let found: SandboxFound;
      try {
        found = await runtime.inspect(vm);
      } catch (err) {
        uninspected.push(vm.id);
        this.deps.log?.({ msg: "microvm kept as recorded: the runtime cannot inspect it", microvmId: vm.id, state: vm.state, err: errorText(err) });
        continue;
      }
      const lost = async (why: string) => {
        await this.move(vm, "TERMINATING", "terminate", why).catch(() => undefined);
        await runtime.terminate({ ...vm, state: "TERMINATING" }).catch(() => undefined);
        await this.move({ ...vm, state: "TERMINATING" }, "TERMINATED", "terminate", why);
      };
      // The recorded state wins where the host still supports it: a resume the server died in
      // leaves the MicroVM SUSPENDED (its checkpoint is whole), a suspend it died in RUNNING
      // when the sandbox still answers, else SUSPENDED when the checkpoint was written.
      if (vm.state === "TERMINATING") await lost(vm.stateReason ?? "Terminated.");
      else if (vm.state === "PENDING") await lost("Starting the MicroVM was interrupted by a server restart.");
      else if (vm.state === "SUSPENDED" && found.checkpoint) kept.push(vm);
      else if (found.running && vm.state === "RUNNING") kept.push(vm);
      else if (found.running && vm.state === "SUSPENDING") kept.push(await this.move(vm, "RUNNING", "resume", "Suspending was interrupted by a server restart; the MicroVM kept running."));
      else if (found.running && vm.state === "SUSPENDED") kept.push(await this.move(vm, "RUNNING", "resume", "Resumed; the server restarted as the resume finished.")); else if (vm.state === "SUSPENDING" && found.checkpoint) kept.push(await this.move(vm, "SUSPENDED"));
      else await lost(`The MicroVM's sandbox was lost while the server was down (it was ${vm.state}).`);
    }
    if (!uninspected.length) await runtime.reap(kept);
    else this.deps.log?.({ msg: "nothing reaped: some MicroVMs could not be inspected", microvms: uninspected });
    // Whatever could be inspected and kept running is taken over either way (its DNS, firewall chain and shaping).
    const running = kept.filter((vm) => vm.state === "RUNNING");
    if (running.length) await runtime.adopt(running).catch((err) => this.deps.log?.({ msg: "could not take over running MicroVMs' sandboxes", error: (err as Error).message }));
    this.known.clear();
    for (const vm of await this.deps.store.microvmsInStates(["PENDING", "RUNNING", "SUSPENDING", "SUSPENDED", "TERMINATING"])) this.remember(vm);
  }

  private async tokenFor(identifier: string, kind: "endpoint" | "shell", minutes: number, allowedPorts: Input<"CreateMicrovmAuthToken">["allowedPorts"]) {
    const vm = await this.get(identifier);
    if (vm.state === "TERMINATING" || vm.state === "TERMINATED") {
      throw new StateConflict("Microvm", vm.id, `Cannot create a token for MicroVM ${vm.id}: it is ${vm.state}.`);
    }
    const refused = ingressRefusal(vm.config.ingressNetworkConnectors, kind);
    if (refused) throw new InvalidInput(`Cannot create ${kind === "shell" ? "a shell" : "an endpoint"} token for MicroVM ${vm.id}: ${refused}`);
    const expiresAt = new Date(this.deps.clock.now().getTime() + minutes * 60_000);
    const token = await this.deps.tokens.issue({ microvmId: vm.id, kind, allowedPorts, expiresAt });
    return { "X-aws-proxy-auth": token };
  }

  createAuthToken(input: Input<"CreateMicrovmAuthToken">): Promise<Record<string, string>> {
    return this.tokenFor(input.microvmIdentifier, "endpoint", input.expirationInMinutes, input.allowedPorts);
  }

  createShellAuthToken(input: Input<"CreateMicrovmShellAuthToken">): Promise<Record<string, string>> {
    return this.tokenFor(input.microvmIdentifier, "shell", input.expirationInMinutes, [{ allPorts: {} }]);
  }

  arnOf(id: string): string {
    return microvmArn(this.deps.scope, id);
  }
}

/** A record settle() may find for an unsettled MicroVM: the one known at the failure, or one written at or after `since` in that state. */
type ExpectedRecord = { state: MicrovmState; updatedAt: number } | { state: MicrovmState; since: number };

interface Unsettled {
  /** What failed; the reason a MicroVM settle() ends is given. */
  why: string;
  /** The records it may find and decide on; any other was written since, and stands. */
  records?: ExpectedRecord[];
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
