// Code artifacts for build tests: zips made on the fly (hostile ones too), a
// real S3-compatible server (s3rver) to serve them, and a shared base-image
// cache so a test run makes each base image once.

import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { CreateBucketCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import S3rver from "s3rver";

export const BASE_IMAGE_CACHE = join(tmpdir(), "lmvm-test-base-images");

/** The project's examples/ directory (from dist/test/support or dist/bench). */
export const EXAMPLES_DIR = join(import.meta.dirname, "..", "..", "..", "examples");

/** A zip of the example app `name` (examples/<name>), subdirectories included, as a user would zip it. */
export function zipExample(name: string): Buffer {
  const root = join(EXAMPLES_DIR, name);
  const walk = (dir: string): ZipEntry[] =>
    readdirSync(dir).flatMap((f) => {
      const path = join(dir, f);
      return statSync(path).isDirectory() ? walk(path) : [{ name: relative(root, path), content: readFileSync(path, "utf8") }];
    });
  return makeZip(walk(root));
}
mkdirSync(BASE_IMAGE_CACHE, { recursive: true });

export interface ZipEntry {
  name: string;
  content?: string;
  /** Makes the entry a symlink to this target. */
  symlink?: string;
  /** Bytes of zeros, for bombs. */
  zeros?: number;
  /** Random bytes, which do not compress. */
  random?: number;
}

/** Builds a zip with Python's zipfile, which writes any entry name, hostile ones included. */
export function makeZip(entries: ZipEntry[]): Buffer {
  const dir = mkdtempSync(join(tmpdir(), "lmvm-zip-"));
  const out = join(dir, "artifact.zip");
  const script = `
import json, os, sys, zipfile, stat
entries = json.load(sys.stdin)
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for e in entries:
        info = zipfile.ZipInfo(e["name"])
        info.compress_type = zipfile.ZIP_DEFLATED
        if "symlink" in e:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, e["symlink"])
        elif "zeros" in e:
            info.external_attr = 0o644 << 16
            with z.open(info, "w", force_zip64=True) as f:
                chunk = bytes(1 << 20)
                left = e["zeros"]
                while left > 0:
                    f.write(chunk[:min(left, len(chunk))])
                    left -= len(chunk)
        elif "random" in e:
            info.external_attr = 0o644 << 16
            z.writestr(info, os.urandom(e["random"]))
        else:
            info.external_attr = (0o755 if e["name"].endswith(".sh") else 0o644) << 16
            z.writestr(info, e.get("content", ""))
`;
  try {
    execFileSync("python3", ["-c", script, out], { input: JSON.stringify(entries) });
    return readFileSync(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface S3Server {
  endpoint: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  put(key: string, body: Buffer): Promise<string>;
  close(): Promise<void>;
}

export async function startS3(): Promise<S3Server> {
  const directory = mkdtempSync(join(tmpdir(), "lmvm-s3-"));
  const server = new S3rver({ port: 0, address: "127.0.0.1", directory, silent: true });
  const { port } = (await server.run()) as { port: number };
  const endpoint = `http://127.0.0.1:${port}`;
  const credentials = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
  const client = new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true, credentials });
  await client.send(new CreateBucketCommand({ Bucket: "artifacts" }));
  return {
    endpoint,
    credentials,
    async put(key, body) {
      await client.send(new PutObjectCommand({ Bucket: "artifacts", Key: key, Body: body }));
      return `s3://artifacts/${key}`;
    },
    async close() {
      client.destroy();
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
