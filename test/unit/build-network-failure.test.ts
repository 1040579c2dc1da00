// Which RUN step outputs count as a network failure, for the reason a failed
// build gives (src/builder/builder.ts): the messages of the usual clients when
// a build has no network, and none of an ordinary failure.

import assert from "node:assert/strict";
import { test } from "node:test";
import { showsNetworkFailure } from "../../src/builder/builder.js";

test("the usual clients' messages without network count as a network failure", () => {
  for (const line of [
    "urllib.error.URLError: <urlopen error [Errno -3] Temporary failure in name resolution>",
    "urllib.error.URLError: <urlopen error [Errno 101] Network is unreachable>",
    "node could not fetch http://x.test/: getaddrinfo EAI_AGAIN x.test",
    "Error: connect ENETUNREACH 198.51.100.10:80",
    "curl: (6) Could not resolve host: example.com",
    "wget: unable to resolve host address 'example.com'",
    "wget: bad address 'example.com'",
    "W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving 'deb.debian.org'",
    "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(': Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')'",
    "npm ERR! request to https://registry.npmjs.org/x failed, reason: getaddrinfo ENOTFOUND registry.npmjs.org",
  ]) assert.ok(showsNetworkFailure([line]), line);
});

test("other failures do not", () => {
  for (const line of ["error: command 'gcc' failed: No such file or directory", "E: Unable to locate package jq", "SyntaxError: invalid syntax", "exit status 3"]) {
    assert.ok(!showsNetworkFailure([line]), line);
  }
});
