// How failures the core does not name reach clients: a database that cannot be reached is a
// ServiceException that says so without the database's address or socket path (those go to the
// server log, which every route writes for a 5xx).

import assert from "node:assert/strict";
import { test } from "node:test";
import { toAwsError } from "../../src/api/errors.js";

const refused = (address: string, port?: number) =>
  Object.assign(new Error(`connect ECONNREFUSED ${address}${port ? `:${port}` : ""}`), { code: "ECONNREFUSED", syscall: "connect", address, ...(port ? { port } : {}) });

test("an unreachable database is a ServiceException that names neither its address nor its socket path", () => {
  for (const err of [
    refused("/var/run/secret-dir/.s.PGSQL.5432"),
    refused("10.1.2.3", 5432),
    Object.assign(new Error("connection to 10.1.2.3 failed: the database system is starting up"), { code: "57P03" }),
    new Error("Connection terminated unexpectedly"),
  ]) {
    const aws = toAwsError(err);
    assert.equal(aws.type, "ServiceException", err.message);
    assert.equal(aws.status, 500);
    assert.match(aws.message, /cannot reach its database right now.*Retry/);
    assert.doesNotMatch(aws.message, /secret-dir|10\.1\.2\.3|PGSQL|ECONNREFUSED/, err.message);
  }
});

test("another unexpected error is the generic internal error", () => {
  const aws = toAwsError(new Error("something at /srv/private broke"));
  assert.equal(aws.type, "ServiceException");
  assert.doesNotMatch(aws.message, /private/);
  assert.match(aws.message, /internal error; the server log has the details/);
});
