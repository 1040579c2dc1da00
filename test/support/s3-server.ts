// A real S3-compatible server for the object store's tests: s3rver in a
// process of its own (test/support/s3-server-main.ts), on a random port, its
// objects in a temporary directory. It is killed, and its directory removed,
// by close(), when the test process exits, and when the test process is ended
// by a signal; it also exits by itself once its stdin (a pipe from the test
// process) closes, so even a SIGKILLed test process leaves no server behind.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { within } from "./deadline.js";

export interface S3Process {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** The environment the AWS SDK (and lmvm server) read credentials, region and endpoint from. */
  env: Record<string, string>;
  /** Where the server keeps its objects (bucket/key paths). */
  directory: string;
  child: ChildProcess;
  /** A client for the server, path-style. */
  client: S3Client;
  createBucket(name: string): Promise<void>;
  close(): Promise<void>;
}

const MAIN = join(import.meta.dirname, "s3-server-main.js");
const live = new Set<() => void>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on("exit", () => {
    for (const stop of live) stop();
  });
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      for (const stop of live) stop();
      process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGTERM" ? 15 : 1));
    });
  }
}

export async function startS3Process(): Promise<S3Process> {
  hookExit();
  const directory = mkdtempSync(join(tmpdir(), "lmvm-s3-"));
  const child = spawn(process.execPath, [MAIN, directory], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  const stopNow = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    rmSync(directory, { recursive: true, force: true });
  };
  live.add(stopNow);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let port: number;
  try {
    const line = await within(20_000, "s3rver to listen", new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once("line", resolve);
      child.once("exit", (code) => reject(new Error(`s3rver exited with ${code}: ${stderr}`)));
    }));
    port = (JSON.parse(line) as { port: number }).port;
  } catch (err) {
    stopNow();
    live.delete(stopNow);
    throw err;
  }
  const endpoint = `http://127.0.0.1:${port}`;
  const credentials = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
  const client = new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true, credentials });
  return {
    endpoint,
    credentials,
    env: { AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey, AWS_REGION: "us-east-1", AWS_ENDPOINT_URL_S3: endpoint },
    directory,
    child,
    client,
    async createBucket(name) {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    async close() {
      client.destroy();
      child.stdin!.end();
      child.kill("SIGTERM");
      await within(10_000, "s3rver to exit", exited).catch(() => child.kill("SIGKILL"));
      stopNow();
      live.delete(stopNow);
    },
  };
}
