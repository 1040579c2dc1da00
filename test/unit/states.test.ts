import assert from "node:assert/strict";
import { test } from "node:test";
import { buildStates, imageStates, microvmStates, StateConflict, versionStateFromBuilds } from "../../src/core/index.js";

test("the MicroVM machine allows the documented lifecycle and nothing else", () => {
  const legal = [
    ["PENDING", "RUNNING"], ["RUNNING", "SUSPENDING"], ["SUSPENDING", "SUSPENDED"], ["SUSPENDED", "RUNNING"],
    ["RUNNING", "TERMINATING"], ["SUSPENDED", "TERMINATING"], ["PENDING", "TERMINATING"], ["TERMINATING", "TERMINATED"],
  ] as const;
  for (const [from, to] of legal) assert.ok(microvmStates.can(from, to), `${from} → ${to}`);
  for (const [from, to] of [["TERMINATED", "RUNNING"], ["SUSPENDED", "SUSPENDING"], ["PENDING", "SUSPENDING"], ["TERMINATING", "RUNNING"]] as const) {
    assert.ok(!microvmStates.can(from, to), `${from} → ${to} must be refused`);
  }
});

test("a refused transition names the current state and the states that would allow it", () => {
  assert.throws(() => microvmStates.check("microvm-1", "SUSPENDED", "SUSPENDING", "suspend"), (err: unknown) => {
    assert.ok(err instanceof StateConflict);
    assert.equal(err.message, "Cannot suspend MicroVM microvm-1: it is SUSPENDED. This is only possible when it is RUNNING.");
    assert.equal(err.resourceId, "microvm-1");
    return true;
  });
  assert.throws(() => imageStates.check("arn", "DELETED", "UPDATING", "update"), /it is DELETED\. This is only possible when it is CREATED or CREATE_FAILED or UPDATED or UPDATE_FAILED/);
});

test("builds never leave a final state", () => {
  for (const to of ["PENDING", "IN_PROGRESS", "SUCCESSFUL", "FAILED"] as const) {
    assert.ok(!buildStates.can("SUCCESSFUL", to));
    assert.ok(!buildStates.can("FAILED", to));
  }
});

test("a version's state follows its builds", () => {
  assert.equal(versionStateFromBuilds([]), "PENDING");
  assert.equal(versionStateFromBuilds(["PENDING", "PENDING"]), "PENDING");
  assert.equal(versionStateFromBuilds(["IN_PROGRESS", "PENDING"]), "IN_PROGRESS");
  assert.equal(versionStateFromBuilds(["SUCCESSFUL", "PENDING"]), "IN_PROGRESS");
  assert.equal(versionStateFromBuilds(["FAILED", "IN_PROGRESS"]), "IN_PROGRESS", "one failure waits for the rest to settle");
  assert.equal(versionStateFromBuilds(["SUCCESSFUL", "SUCCESSFUL"]), "SUCCESSFUL");
  assert.equal(versionStateFromBuilds(["SUCCESSFUL", "FAILED"]), "FAILED");
});
