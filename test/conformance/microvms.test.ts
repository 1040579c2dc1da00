// MicroVMs and their tokens through the official SDK client. The sandbox
// runtime is scripted (test/support/scripted.ts), so that runtime steps can
// fail or report trouble on cue; test/e2e runs the real one.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, CreateMicrovmShellAuthTokenCommand, DeleteMicrovmImageCommand,
  DeleteMicrovmImageVersionCommand, GetMicrovmCommand, GetMicrovmImageCommand, ListMicrovmsCommand, ResumeMicrovmCommand,
  RunMicrovmCommand, SuspendMicrovmCommand, TerminateMicrovmCommand, UpdateMicrovmImageVersionCommand,
} from "@aws-sdk/client-lambda-microvms";
import { NotBegun, type Store } from "../../src/core/index.js";
import { MicrovmTokens, portAllowed } from "../../src/proxy/index.js";
import { deriveKey, serverKey } from "../../src/server/data-dir.js";
import { eventually, imageRequest, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { rejects } from "../support/assertions.js";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";

// The rate limits have their own tests (quotas.test.ts); this file drives the
// scripted runtime faster than the documented rates allow, so it raises them.
const FAST = { rateLimits: { "*": 10_000 } };

const IMAGE_ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:app";
const SHELL = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:SHELL_INGRESS";

/**
 * Makes the store's transactions fail as they do while PostgreSQL restarts, until the returned
 * function is called: after `pass` more transactions went through, and each one committed
 * with its answer lost when `lost` (the connection dropped after COMMIT).
 */
function outage(store: Store, opts: { pass?: number; lost?: boolean } = {}): () => void {
  const original = store.transaction.bind(store);
  let pass = opts.pass ?? 0;
  const down = () => Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
  store.transaction = async <T>(fn: (tx: Store) => Promise<T>): Promise<T> => {
    if (pass > 0) {
      pass--;
      return original(fn);
    }
    if (!opts.lost) throw down();
    await original(fn);
    throw down();
  };
  return () => {
    store.transaction = original;
  };
}

describe("microvms", () => {
  let t: TestPlatform;
  const builder = new ScriptedBuilder();
  const runtime = new ScriptedRuntime();
  builder.always({ snapshot: { memorySnapshotSizeInBytes: 1 } });

  before(async () => {
    t = await startTestPlatform({ builder, runtime, ...FAST });
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("app")));
    await eventually(async () => ((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "app" }))).state === "CREATED" ? true : undefined), "image built");
  });
  after(() => t.stop());

  const state = async (id: string) => (await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
  const until = (id: string, want: string) => eventually(async () => ((await state(id)) === want ? true : undefined), want);

  test("RunMicrovm answers PENDING with an endpoint, then the MicroVM is RUNNING", async () => {
    const vm = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, maximumDurationInSeconds: 3600, runHookPayload: "{\"tenant\":1}" }));
    assert.match(vm.microvmId ?? "", /^microvm-[0-9a-f]{17}$/);
    assert.equal(vm.state, "PENDING");
    assert.equal(vm.endpoint, `https://${vm.microvmId}.microvm.localhost:${t.platform.endpointPort}`);
    assert.equal(vm.imageArn, IMAGE_ARN);
    assert.equal(vm.imageVersion, "1.0");
    assert.equal(vm.maximumDurationInSeconds, 3600);
    assert.ok(vm.startedAt instanceof Date);
    await until(vm.microvmId!, "RUNNING");
    const listed = await t.client.send(new ListMicrovmsCommand({ imageIdentifier: IMAGE_ARN }));
    assert.ok(listed.items?.some((i) => i.microvmId === vm.microvmId));
  });

  test("maximumDurationInSeconds defaults to 8 hours", async () => {
    const vm = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    assert.equal(vm.maximumDurationInSeconds, 28_800);
  });

  test("suspend, resume and terminate follow the state machine and refuse illegal moves by name", async () => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    const id = microvmId!;
    await until(id, "RUNNING");
    await rejects(t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id })), "ConflictException", /it is RUNNING/);
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "SUSPENDED");
    await rejects(t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id })), "ConflictException", /it is SUSPENDED\. This is only possible when it is RUNNING/);
    await t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
    assert.equal(await state(id), "RUNNING", "ResumeMicrovm returns once the MicroVM runs");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "TERMINATED");
    const done = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
    assert.ok(done.terminatedAt instanceof Date);
    await rejects(t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })), "ConflictException", /it is TERMINATED/);
    await rejects(t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id })), "ConflictException", /it is TERMINATED/);
    await rejects(t.client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] })), "ConflictException", /TERMINATED/);
    assert.deepEqual(runtime.calls.filter((c) => c.endsWith(id)).map((c) => c.split(" ")[0]), ["run", "suspend", "resume", "terminate"]);
  });

  test("a failed suspend leaves the MicroVM RUNNING with the reason", async () => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    await until(microvmId!, "RUNNING");
    runtime.failNext.suspend = "/suspend hook answered 500";
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: microvmId! }));
    const vm = await eventually(async () => {
      const v = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: microvmId! }));
      return v.state === "RUNNING" && v.stateReason ? v : undefined;
    }, "suspend failure");
    assert.match(vm.stateReason!, /\/suspend hook answered 500/);
  });

  test("a failed start terminates the MicroVM with the reason", async () => {
    runtime.failNext.run = "restore failed: no host FD available";
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    await until(microvmId!, "TERMINATED");
    const vm = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: microvmId! }));
    assert.match(vm.stateReason!, /no host FD available/);
  });

  test("auth tokens are signed, bound to the MicroVM and its ports, and expire", async () => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    const r = await t.client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: microvmId!, expirationInMinutes: 30, allowedPorts: [{ port: 8080 }, { range: { startPort: 9000, endPort: 9010 } }] }));
    const token = r.authToken?.["X-aws-proxy-auth"];
    assert.ok(token);
    const tokens = new MicrovmTokens(deriveKey(serverKey(t.dataDir), "microvm-tokens"));
    const claims = await tokens.verify(token);
    assert.equal(claims.microvmId, microvmId);
    assert.equal(claims.kind, "endpoint");
    assert.ok(portAllowed(claims.allowedPorts, 8080) && portAllowed(claims.allowedPorts, 9005) && !portAllowed(claims.allowedPorts, 8081));
    const minutes = (claims.expiresAt.getTime() - Date.now()) / 60_000;
    assert.ok(minutes > 29 && minutes <= 30, `expires in ${minutes} minutes`);
    await assert.rejects(tokens.verify(token, new Date(Date.now() + 31 * 60_000)), /exp/);
    await assert.rejects(tokens.verify(`${token.slice(0, -2)}xx`));
  });

  test("shell tokens need the SHELL_INGRESS connector", async () => {
    const plain = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    await rejects(t.client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: plain.microvmId!, expirationInMinutes: 5 })), "ValidationException", /Shell access requires SHELL_INGRESS/);
    const shell = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, ingressNetworkConnectors: [SHELL] }));
    assert.deepEqual(shell.ingressNetworkConnectors, [SHELL]);
    const r = await t.client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: shell.microvmId!, expirationInMinutes: 5 }));
    assert.ok(r.authToken?.["X-aws-proxy-auth"]);
  });

  test("an unknown connector is a ValidationException listing the known ones", async () => {
    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, ingressNetworkConnectors: ["arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:NOPE"] })), "ValidationException", /SHELL_INGRESS/);
  });

  test("RunMicrovm refuses versions that cannot run, and images or MicroVMs that do not exist", async () => {
    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, imageVersion: "9.0" })), "ResourceNotFoundException");
    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: "arn:aws:lambda:us-east-1:000000000000:microvm-image:nope" })), "ResourceNotFoundException");
    await t.client.send(new UpdateMicrovmImageVersionCommand({ imageIdentifier: "app", imageVersion: "1.0", status: "INACTIVE" }));
    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, imageVersion: "1.0" })), "ConflictException", /INACTIVE/);
    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN })), "ConflictException", /no SUCCESSFUL, ACTIVE version/);
    await t.client.send(new UpdateMicrovmImageVersionCommand({ imageIdentifier: "app", imageVersion: "1.0", status: "ACTIVE" }));
    for (const send of [
      () => t.client.send(new GetMicrovmCommand({ microvmIdentifier: "microvm-00000000000000000" })),
      () => t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: "microvm-00000000000000000" })),
      () => t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: "microvm-00000000000000000" })),
      () => t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: "microvm-00000000000000000" })),
      () => t.client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: "microvm-00000000000000000", expirationInMinutes: 5, allowedPorts: [{ allPorts: {} }] })),
      () => t.client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: "microvm-00000000000000000", expirationInMinutes: 5 })),
    ]) await rejects(send(), "ResourceNotFoundException");
  });

  test("a live sandbox's standing trouble shows in its RUNNING MicroVM's stateReason, and goes with the trouble", async () => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    const id = microvmId!;
    await until(id, "RUNNING");
    const reason = async () => (await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).stateReason;
    runtime.conditions.set(id, "Its disk is full: test.");
    await t.platform.controlPlane.microvms.checkSandboxes();
    assert.equal(await reason(), "Its disk is full: test.");
    assert.equal(await state(id), "RUNNING");
    runtime.conditions.delete(id);
    await t.platform.controlPlane.microvms.checkSandboxes();
    assert.equal(await reason(), undefined);
    // A transition's own reason is not the runtime's to clear.
    runtime.conditions.set(id, "Its disk is full: test.");
    await t.platform.controlPlane.microvms.checkSandboxes();
    runtime.failNext.suspend = "no room";
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    await eventually(async () => ((await reason())?.startsWith("Suspending failed") ? true : undefined), "the failed suspend's reason");
    // The sandbox check that comes next, the trouble still there, leaves the transition's reason as it is.
    await t.platform.controlPlane.microvms.checkSandboxes();
    assert.match((await reason()) ?? "", /^Suspending failed, so the MicroVM kept running: no room/);
    runtime.conditions.delete(id);
    await t.platform.controlPlane.microvms.checkSandboxes();
    assert.match((await reason()) ?? "", /^Suspending failed, so the MicroVM kept running: no room/);
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });

  test("a resume that could not begin leaves the MicroVM SUSPENDED; one that failed later terminates it", async () => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    const id = microvmId!;
    await until(id, "RUNNING");
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "SUSPENDED");
    runtime.failNext.resume = new NotBegun("resuming could not begin: no room for its disk");
    await rejects(t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id })), "ConflictException", /stays SUSPENDED, its checkpoint kept: resuming could not begin: no room for its disk/);
    assert.equal(await state(id), "SUSPENDED");
    runtime.failNext.resume = "the checkpoint is corrupt";
    await rejects(t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id })), "ConflictException", /failed, so it was terminated: the checkpoint is corrupt/);
    assert.equal(await state(id), "TERMINATED");
  });

  test("a suspend that finished but whose answer was lost leaves the MicroVM SUSPENDED on its checkpoint, not terminated", async () => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    const id = microvmId!;
    await until(id, "RUNNING");
    runtime.failAfter.suspend = "lost host at 10.0.0.5:7700 during suspend: read ETIMEDOUT";
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "SUSPENDED");
    await t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "RUNNING");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });

  /** A MicroVM of the image, RUNNING. */
  const running = async () => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    await until(microvmId!, "RUNNING");
    return microvmId!;
  };
  /** A MicroVM of the image, run and then SUSPENDED. */
  const suspended = async () => {
    const id = await running();
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "SUSPENDED");
    return id;
  };
  /** Runs `fn` while the store is down (see outage), and brings it back whatever happens. */
  const duringOutage = async (store: Store, ...rest: [fn: () => Promise<void>] | [opts: Parameters<typeof outage>[1], fn: () => Promise<void>]) => {
    const [opts, fn] = rest.length === 1 ? [{}, rest[0]] : rest;
    const back = outage(store, opts);
    try {
      await fn();
    } finally {
      back();
    }
  };

  test("a resume done but not recorded (the store down) is settled before a retry, never resumed twice", async () => {
    const id = await suspended();
    await duringOutage(t.platform.controlPlane.opts.store, async () => {
      await rejects(t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id })), "ServiceException");
      assert.equal(await state(id), "SUSPENDED", "the record could not say RUNNING");
      // The retry, as the endpoint proxy's auto-resume would make it, while the store is still down.
      await assert.rejects(t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id })));
    });
    await t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
    assert.equal(await state(id), "RUNNING");
    assert.equal(runtime.calls.filter((c) => c === `resume ${id}`).length, 1, "resumed once");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "TERMINATED");
  });

  test("a suspend whose host cannot be inspected afterwards stays SUSPENDING until it can, then ends SUSPENDED on its checkpoint", async () => {
    const id = await running();
    runtime.failAfter.suspend = "lost host at 10.0.0.5:7700 during suspend: read ETIMEDOUT";
    runtime.failInspect = "host 10.0.0.5:7700 unreached";
    try {
      await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
      await eventually(async () => (runtime.calls.includes(`inspect ${id}`) ? true : undefined), "the failed suspend's inspect");
      await t.platform.controlPlane.microvms.checkSandboxes();
      assert.equal(await state(id), "SUSPENDING", "neither presumed running nor lost while it cannot be inspected");
    } finally {
      runtime.failInspect = undefined;
    }
    await t.platform.controlPlane.microvms.checkSandboxes();
    assert.equal(await state(id), "SUSPENDED");
    await t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
    assert.equal(await state(id), "RUNNING");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });

  /** Runs the sandbox check until the MicroVM is in `want`, as its 3 s timer would. */
  const settles = (id: string, want: string) =>
    eventually(async () => {
      await t.platform.controlPlane.microvms.checkSandboxes();
      return (await state(id)) === want ? true : undefined;
    }, `${id} settled ${want}`);

  test("a dead sandbox whose TERMINATED could not be recorded ends TERMINATED once the store answers", async () => {
    const id = await running();
    runtime.kill(id, "out of memory");
    await duringOutage(t.platform.controlPlane.opts.store, { pass: 1 }, async () => { // TERMINATING is written, TERMINATED is not
      await t.platform.controlPlane.microvms.checkSandboxes().catch(() => undefined);
    });
    await settles(id, "TERMINATED");
    assert.match((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).stateReason ?? "", /out of memory/);
  });

  test("a TerminateMicrovm whose TERMINATING landed but whose answer was lost still ends the MicroVM", async () => {
    const id = await running();
    await duringOutage(t.platform.controlPlane.opts.store, { lost: true }, async () => {
      await rejects(t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })), "ServiceException");
    });
    await settles(id, "TERMINATED");
    assert.ok(runtime.calls.includes(`terminate ${id}`), "its sandbox was freed");
  });

  test("a SuspendMicrovm whose SUSPENDING landed but whose answer was lost leaves the MicroVM RUNNING with the reason", async () => {
    const id = await running();
    await duringOutage(t.platform.controlPlane.opts.store, { lost: true }, async () => {
      await rejects(t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id })), "ServiceException");
    });
    await settles(id, "RUNNING");
    assert.match((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).stateReason ?? "", /^Suspending failed, so the MicroVM kept running/);
    assert.ok(!runtime.calls.includes(`suspend ${id}`), "the suspend was never begun");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });

  test("a resume done but not recorded whose sandbox then died ends the MicroVM: neither sandbox nor checkpoint is left", async () => {
    const id = await suspended();
    await duringOutage(t.platform.controlPlane.opts.store, async () => {
      await rejects(t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id })), "ServiceException");
      runtime.kill(id, "out of memory"); // the resumed sandbox dies; its checkpoint went with the resume
    });
    await settles(id, "TERMINATED");
    assert.match((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).stateReason ?? "", /neither its sandbox nor its checkpoint/);
  });

  test("a RunMicrovm whose new MicroVM could not be read back (the store gone after the insert) does not leave it PENDING", async () => {
    const listed = async () => new Set((await t.client.send(new ListMicrovmsCommand({}))).items?.map((i) => i.microvmId));
    const before = await listed();
    const store = t.platform.controlPlane.opts.store;
    const original = store.getMicrovm;
    store.getMicrovm = async () => {
      store.getMicrovm = original;
      throw Object.assign(new Error("Connection terminated unexpectedly"), {});
    };
    try {
      await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN })), "ServiceException");
    } finally {
      store.getMicrovm = original;
    }
    const made = [...(await listed())].filter((id) => !before.has(id));
    assert.equal(made.length, 1, "the insert landed");
    await settles(made[0]!, "TERMINATED");
    assert.ok(!runtime.calls.includes(`run ${made[0]}`), "never started");
  });

  test("a record written by someone else since the failure stands: settling does not act on it", async () => {
    const id = await suspended();
    const store = t.platform.controlPlane.opts.store;
    await duringOutage(store, async () => {
      await rejects(t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id })), "ServiceException");
      // As a server that took over would write it meanwhile.
      await store.updateMicrovm(id, { stateReason: "Written by another server.", updatedAt: new Date(Date.now() + 60_000) });
    });
    const inspected = runtime.calls.filter((c) => c === `inspect ${id}`).length;
    await t.platform.controlPlane.microvms.checkSandboxes();
    const vm = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
    assert.equal(vm.state, "SUSPENDED");
    assert.equal(vm.stateReason, "Written by another server.");
    assert.equal(runtime.calls.filter((c) => c === `inspect ${id}`).length, inspected, "not inspected to be settled");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "TERMINATED");
  });

  test("one sandbox check at a time", () => {
    const microvms = t.platform.controlPlane.microvms;
    const first = microvms.checkSandboxes();
    assert.equal(microvms.checkSandboxes(), first, "a check asked for while one runs is that one");
    return first;
  });

  test("no capacity is InsufficientCapacityException and creates nothing", async () => {
    runtime.capacity = false;
    try {
      const before = (await t.client.send(new ListMicrovmsCommand({}))).items?.length;
      await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN })), "InsufficientCapacityException");
      assert.equal((await t.client.send(new ListMicrovmsCommand({}))).items?.length, before);
    } finally {
      runtime.capacity = true;
    }
  });

  test("images and versions with live MicroVMs cannot be deleted", async () => {
    await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    await rejects(t.client.send(new DeleteMicrovmImageCommand({ imageIdentifier: "app" })), "ConflictException", /MicroVMs still run from it \(microvm-/);
    await rejects(t.client.send(new DeleteMicrovmImageVersionCommand({ imageIdentifier: "app", imageVersion: "1.0" })), "ConflictException", /Terminate them first/);
  });
});
