// Fetches a code artifact to a local file: s3:// through the AWS SDK (any
// S3-compatible endpoint), file:// from this host, https:// over TLS. Each
// way of failing has its own message, and no download may exceed the limit.

import { createWriteStream } from "node:fs";
import { open, stat } from "node:fs/promises";
import { get as httpsGet } from "node:https";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { GetObjectCommand, S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import { BuildFailure } from "../core/index.js";

export interface ArtifactSource {
  /** S3 client settings: endpoint, region, credentials. */
  s3?: S3ClientConfig;
  /** Extra CA certificates (PEM) trusted for https:// artifacts. */
  httpsCa?: string;
  maxBytes: number;
}

function limited(maxBytes: number, uri: string): Transform {
  let total = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      total += chunk.length;
      if (total > maxBytes) done(new BuildFailure(`Code artifact ${uri} is larger than the ${maxBytes} bytes allowed for a compressed artifact.`));
      else done(null, chunk);
    },
  });
}

async function fromS3(uri: string, dest: string, src: ArtifactSource, signal: AbortSignal): Promise<void> {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri);
  if (!m) throw new BuildFailure(`Code artifact URI ${uri} is not of the form s3://bucket/key.`);
  const [, bucket, key] = m;
  const client = new S3Client({ region: "us-east-1", ...src.s3 });
  try {
    const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
    if (res.ContentLength !== undefined && res.ContentLength > src.maxBytes) {
      throw new BuildFailure(`Code artifact ${uri} is ${res.ContentLength} bytes; the limit for a compressed artifact is ${src.maxBytes}.`);
    }
    await pipeline(res.Body as Readable, limited(src.maxBytes, uri), createWriteStream(dest), { signal });
  } catch (err) {
    if (err instanceof BuildFailure) throw err;
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number }; message?: string };
    const status = e.$metadata?.httpStatusCode;
    if (e.name === "NoSuchKey" || e.name === "NotFound") throw new BuildFailure(`Code artifact ${uri} does not exist: bucket '${bucket}' has no object '${key}'.`);
    if (e.name === "NoSuchBucket") throw new BuildFailure(`Code artifact ${uri} does not exist: there is no bucket '${bucket}'.`);
    if (status === 403 || e.name === "AccessDenied" || e.name === "InvalidAccessKeyId" || e.name === "SignatureDoesNotMatch") {
      throw new BuildFailure(`Access to code artifact ${uri} was denied (${e.name}): the build role's credentials may not read it.`);
    }
    throw new BuildFailure(`Code artifact ${uri} could not be fetched from S3: ${e.name ?? "error"}: ${e.message}`);
  } finally {
    client.destroy();
  }
}

/** The local path of a file:// artifact. */
export function artifactPath(uri: string): string {
  return decodeURIComponent(new URL(uri).pathname);
}

/** The BuildFailure for a file:// artifact that could not be read (or a BuildFailure already thrown). */
function unreadable(uri: string, path: string, err: unknown): BuildFailure {
  if (err instanceof BuildFailure) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return new BuildFailure(`Code artifact ${uri} does not exist on the lmvm host.`);
  if (code === "EACCES") return new BuildFailure(`Access to code artifact ${uri} was denied: the lmvm server may not read ${path}.`);
  return new BuildFailure(`Code artifact ${uri} cannot be read: ${(err as Error).message}`);
}

async function fromFile(uri: string, dest: string, src: ArtifactSource, signal: AbortSignal, path = artifactPath(uri)): Promise<void> {
  let size: number;
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new BuildFailure(`Code artifact ${uri} is not a regular file.`);
    size = s.size;
  } catch (err) {
    throw unreadable(uri, path, err);
  }
  if (size > src.maxBytes) throw new BuildFailure(`Code artifact ${uri} is ${size} bytes; the limit for a compressed artifact is ${src.maxBytes}.`);
  const handle = await open(path, "r");
  try {
    await pipeline(handle.createReadStream(), limited(src.maxBytes, uri), createWriteStream(dest), { signal });
  } finally {
    await handle.close().catch(() => undefined);
  }
}

function fromHttps(uri: string, dest: string, src: ArtifactSource, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpsGet(uri, { signal, ...(src.httpsCa ? { ca: src.httpsCa } : {}), timeout: 60_000 }, (res) => {
      const status = res.statusCode ?? 0;
      if (status === 404) return reject(new BuildFailure(`Code artifact ${uri} does not exist (HTTP 404).`));
      if (status === 401 || status === 403) return reject(new BuildFailure(`Access to code artifact ${uri} was denied (HTTP ${status}).`));
      if (status >= 300 && status < 400) return reject(new BuildFailure(`Code artifact ${uri} redirects (HTTP ${status}); give the final URL.`));
      if (status !== 200) return reject(new BuildFailure(`Code artifact ${uri} could not be fetched: HTTP ${status}.`));
      const length = Number(res.headers["content-length"] ?? 0);
      if (length > src.maxBytes) return reject(new BuildFailure(`Code artifact ${uri} is ${length} bytes; the limit for a compressed artifact is ${src.maxBytes}.`));
      pipeline(res, limited(src.maxBytes, uri), createWriteStream(dest)).then(resolve, reject);
    });
    req.on("timeout", () => req.destroy(new BuildFailure(`Code artifact ${uri} did not answer within 60 seconds.`)));
    req.on("error", (err) => reject(err instanceof BuildFailure ? err : new BuildFailure(`Code artifact ${uri} could not be fetched: ${err.message}`)));
  });
}

/**
 * Checks that a file:// artifact can be sent as it is (a regular file within the limit, readable)
 * and answers its size, or throws the BuildFailure fetching it would: a build on an agent gets
 * the file from the server's host (src/cluster), whose messages are the same as on one host.
 */
export async function checkFileArtifact(uri: string, maxBytes: number): Promise<number> {
  const path = artifactPath(uri);
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new BuildFailure(`Code artifact ${uri} is not a regular file.`);
    if (s.size > maxBytes) throw new BuildFailure(`Code artifact ${uri} is ${s.size} bytes; the limit for a compressed artifact is ${maxBytes}.`);
    await (await open(path, "r")).close();
    return s.size;
  } catch (err) {
    throw unreadable(uri, path, err);
  }
}

/** Copies the artifact `uri`, already received at `path` (sent by the server), to `dest`, with the same limit and checks as fetchArtifact. */
export async function copyArtifact(uri: string, path: string, dest: string, src: ArtifactSource, signal: AbortSignal): Promise<void> {
  await fromFile(uri, dest, src, signal, path);
  await checkZip(uri, dest);
}

/** Downloads `uri` to `dest` and checks that it is a zip archive. */
export async function fetchArtifact(uri: string, dest: string, src: ArtifactSource, signal: AbortSignal): Promise<void> {
  if (uri.startsWith("s3://")) await fromS3(uri, dest, src, signal);
  else if (uri.startsWith("file://")) await fromFile(uri, dest, src, signal);
  else if (uri.startsWith("https://")) await fromHttps(uri, dest, src, signal);
  else throw new BuildFailure(`Code artifact URI ${uri} has an unsupported scheme; use s3://, file:// or https://.`);
  await checkZip(uri, dest);
}

async function checkZip(uri: string, dest: string): Promise<void> {
  const handle = await open(dest, "r");
  try {
    const magic = Buffer.alloc(4);
    await handle.read(magic, 0, 4, 0);
    // A zip starts with a local file header, or, when empty, with the end-of-central-directory record.
    if (!magic.equals(Buffer.from("PK\x03\x04", "latin1")) && !magic.equals(Buffer.from("PK\x05\x06", "latin1"))) {
      throw new BuildFailure(`Code artifact ${uri} is not a zip archive. Zip the app with its Dockerfile at the root (for example: cd app && zip -r ../app.zip .).`);
    }
  } finally {
    await handle.close();
  }
}
