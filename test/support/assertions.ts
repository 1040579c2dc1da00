import assert from "node:assert/strict";

/** Asserts that `p` fails with the SDK error `name`, and that its message matches. */
export async function rejects(p: Promise<unknown>, name: string, message?: RegExp): Promise<Error> {
  const err = await p.then(() => undefined, (e: Error) => e);
  assert.ok(err, `expected ${name}, but the call succeeded`);
  assert.equal(err.name, name, `expected ${name}, got ${err.name}: ${err.message}`);
  if (message) assert.match(err.message, message);
  return err;
}
