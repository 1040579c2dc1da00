// `lmvm server` killed with SIGKILL at random moments while requests are in
// flight restarts with every acknowledged resource intact and nothing half made,
// and with an audit event for every call that got an answer before the kill.

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, GetMicrovmImageCommand, ListMicrovmImageBuildsCommand, ListMicrovmImagesCommand, ListTagsCommand,
  UpdateMicrovmImageVersionCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { CloudTrailClient, paginateLookupEvents } from "@aws-sdk/client-cloudtrail";
import { within } from "../support/deadline.js";
import { imageRequest, readCredentials, sdkClient, tempDir } from "../support/platform.js";
import { spawnServer, type ServerProcess } from "../support/processes.js";

const ROUNDS = 5;

/** Notes the request id of every answer the client receives, errors included (the raw response, before it is parsed). */
function noteAnswers(client: LambdaMicrovmsClient, answered: Set<string>): void {
  client.middlewareStack.add(
    (next) => async (args) => {
      const out = await next(args);
      const id = (out.response as { headers?: Record<string, string> }).headers?.["x-amzn-requestid"];
      if (id) answered.add(id);
      return out;
    },
    { step: "deserialize", priority: "low", name: "noteAnswers" },
  );
}

/** Request ids of every event in the audit trail since `since`. */
async function auditedSince(url: string, credentials: { accessKeyId: string; secretAccessKey: string }, since: Date): Promise<Set<string>> {
  const client = new CloudTrailClient({ endpoint: url, region: "us-east-1", credentials, maxAttempts: 1 });
  const ids = new Set<string>();
  try {
    for await (const page of paginateLookupEvents({ client }, { StartTime: since })) {
      for (const e of page.Events ?? []) ids.add((JSON.parse(e.CloudTrailEvent!) as { requestID: string }).requestID);
    }
  } finally {
    client.destroy();
  }
  return ids;
}

describe("kill -9", () => {
  let dataDir: string;
  let server: ServerProcess;
  before(() => {
    dataDir = tempDir();
  });
  after(async () => {
    await server?.kill();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test(`the server survives SIGKILL ${ROUNDS} times mid-write and restarts consistent`, async () => {
    const acknowledged = new Map<string, { tags: Record<string, string>; status: string }>();
    let n = 0;
    /** Calls answered since the server's last start, and when that was (event times are whole seconds). */
    let answered = new Set<string>();
    let since = new Date(Date.now() - 2000);
    let audited = 0;
    for (let round = 0; round <= ROUNDS; round++) {
      // Writers create images as fast as they can (and with --no-builder their builds stay queued):
      // quotas and request rates far above AWS's, or the first refusal would stop the writers.
      server = await spawnServer(dataDir, { args: ["--quotas", "images=1000000,concurrent-builds=1000000", "--rate-limits", "*=100000"] });
      // Every call answered before the kill has its event.
      const events = await auditedSince(server.url, readCredentials(dataDir), since);
      const missing = [...answered].filter((id) => !events.has(id));
      assert.deepEqual(missing, [], `${missing.length} of ${answered.size} answered calls have no audit event after kill -9`);
      audited += answered.size;
      answered = new Set();
      since = new Date(Date.now() - 2000);
      const client: LambdaMicrovmsClient = sdkClient(server.url, readCredentials(dataDir));
      noteAnswers(client, answered);
      // Everything acknowledged before this restart is still there, exactly.
      for (const [name, want] of acknowledged) {
        const got = await client.send(new GetMicrovmImageCommand({ imageIdentifier: name }));
        assert.equal(got.name, name);
        assert.deepEqual((await client.send(new ListTagsCommand({ Resource: got.imageArn! }))).Tags, want.tags, `tags of ${name}`);
        const builds = await client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: name, imageVersion: "1.0" }));
        assert.equal(builds.items?.length, 1, `${name} has its build record`);
      }
      // Nothing half-made: every listed image has its version and build.
      const listed = await client.send(new ListMicrovmImagesCommand({}));
      for (const image of listed.items ?? []) {
        const builds = await client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: image.name!, imageVersion: "1.0" }));
        assert.equal(builds.items?.length, 1, `${image.name} was created whole`);
      }

      if (round === ROUNDS) {
        client.destroy();
        break; // the last start only checks what the last kill left
      }
      // Writers in flight; SIGKILL lands at a random moment among them.
      let stop = false;
      const writers = Array.from({ length: 4 }, async () => {
        while (!stop) {
          const name = `img-${round}-${n++}`;
          const tags = { round: String(round), n: String(n) };
          try {
            await client.send(new CreateMicrovmImageCommand(imageRequest(name, { tags })));
            acknowledged.set(name, { tags, status: "ACTIVE" });
            await client.send(new UpdateMicrovmImageVersionCommand({ imageIdentifier: name, imageVersion: "1.0", status: "ACTIVE" }));
          } catch {
            return; // the server died under us
          }
        }
      });
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 400));
      await server.kill("SIGKILL");
      stop = true;
      await within(60_000, "the writers to stop after the server died", Promise.all(writers));
      client.destroy();
    }
    assert.ok(acknowledged.size > ROUNDS, `only ${acknowledged.size} writes were acknowledged`);
    assert.ok(audited > acknowledged.size, `only ${audited} answered calls were checked in the audit trail`);
  });
});
