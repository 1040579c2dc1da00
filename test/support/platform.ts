// Starts a real lmvm platform for a test: its own data directory, an
// ephemeral port, and an official SDK client holding the root credentials
// the server wrote on first start.

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LambdaMicrovmsClient } from "@aws-sdk/client-lambda-microvms";
import { byDeadline } from "./deadline.js";
import { databaseFor } from "./postgres.js";
import { freeSandboxes } from "./sandboxes.js";
import { DEFAULTS, parseCredentialsFile, paths, startPlatform, type Platform, type PlatformConfig } from "../../src/server/index.js";

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";

export interface TestPlatform {
  platform: Platform;
  client: LambdaMicrovmsClient;
  dataDir: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  stop(): Promise<void>;
}

const tempDirs: string[] = [];
// Each test file runs in its own process: its temporary directories go when it exits.
process.on("exit", () => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

export function tempDir(prefix = "lmvm-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

export function sdkClient(url: string, credentials: { accessKeyId: string; secretAccessKey: string }, extra: Record<string, unknown> = {}) {
  return new LambdaMicrovmsClient({ endpoint: url, region: DEFAULTS.region, credentials, maxAttempts: 1, ...extra });
}

export function readCredentials(dataDir: string) {
  const creds = parseCredentialsFile(readFileSync(paths(dataDir).credentials, "utf8"));
  if (!creds) throw new Error("no credentials written");
  return creds;
}

/** The request rates tests run with unless they set their own (`rateLimits: {}` is AWS's defaults). */
export const TEST_RATE_LIMITS = { "*": 10_000 };

export async function startTestPlatform(overrides: Partial<PlatformConfig> = {}): Promise<TestPlatform> {
  const dataDir = overrides.dataDir ?? tempDir();
  // Without an explicit builder, none: a real one would try to fetch the tests' made-up s3:// artifacts from AWS.
  // Request rates far above AWS's unless a test sets them: tests poll and burst faster than a
  // client of the service would, and a throttled poll would fail them by the machine's speed.
  // test/conformance/quotas.test.ts tests the rates themselves, at AWS's defaults.
  // LMVM_TEST_STORE=postgres: the state in a PostgreSQL database of this data directory's own (test/support/postgres.ts).
  const database = overrides.database ?? (await databaseFor(dataDir));
  const platform = await startPlatform({ ...DEFAULTS, apiPort: 0, endpointPort: 0, dataDir, log: () => {}, builder: null, rateLimits: TEST_RATE_LIMITS, ...overrides, ...(database ? { database } : {}) });
  const credentials = readCredentials(dataDir);
  const client = sdkClient(platform.url, credentials);
  return {
    platform,
    client,
    dataDir,
    credentials,
    async stop() {
      client.destroy();
      await platform.stop();
      await freeSandboxes(dataDir);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Polls `check` until it returns a value, for work the server finishes asynchronously; a check that hangs counts against the deadline. */
export async function eventually<T>(check: () => Promise<T | undefined>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await byDeadline(deadline, timeoutMs, `timed out waiting for ${what}`, check());
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const BASE_IMAGE_ARN = "arn:aws:lambda:us-east-1:aws:microvm-image:busybox";
export const BUILD_ROLE_ARN = "arn:aws:iam::000000000000:role/MicroVMBuildRole";

export function imageRequest(name: string, extra: Record<string, unknown> = {}) {
  return {
    name,
    baseImageArn: BASE_IMAGE_ARN,
    buildRoleArn: BUILD_ROLE_ARN,
    codeArtifact: { uri: "s3://artifacts/app.zip" },
    ...extra,
  };
}
