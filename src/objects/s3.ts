// The object store as an S3 bucket (s3://bucket/prefix) on AWS or any
// S3-compatible server (MinIO, Garage, Ceph RGW...). Credentials and region
// come from the standard AWS chain (AWS_ACCESS_KEY_ID..., profiles, instance
// roles); the endpoint from --object-store-endpoint, AWS_ENDPOINT_URL_S3 or
// AWS_ENDPOINT_URL. Each object carries its SHA-256 as user metadata
// (x-amz-meta-sha256), which a get checks the bytes against.
//
// Files up to PART_BYTES go up in one PutObject, larger ones as a multipart
// upload of PART_BYTES parts, PARALLEL_PARTS at a time, read into memory one
// part each: a body whose bytes are known can be signed (SigV4 hashes the
// payload over plain http too), so no server needs to accept unsigned or
// aws-chunked streaming bodies. A multipart upload that fails is aborted.
// Checksums beyond SigV4's payload hash are sent only when an operation
// requires them: many S3-compatible servers reject the SDK's default CRC32
// trailers.

import { createHash } from "node:crypto";
import { open, stat } from "node:fs/promises";
import { createReadStream } from "node:fs";
import {
  AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateMultipartUploadCommand, DeleteObjectCommand, GetObjectCommand,
  HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, S3ServiceException, UploadPartCommand, type S3ClientConfig,
} from "@aws-sdk/client-s3";
import type { Readable } from "node:stream";
import { randomBytes } from "node:crypto";
import { renameSync, rmSync } from "node:fs";
import { ObjectStoreUnavailable, type ObjectInfo, type ObjectStore } from "../core/index.js";
import { copyHashing } from "./file.js";
import { checkKey, checkPrefix } from "./keys.js";

export const PART_BYTES = 16 * 1024 * 1024;
const PARALLEL_PARTS = 4;

export interface S3ObjectStoreOptions {
  bucket: string;
  /** Key prefix inside the bucket, '' or ending with '/'. */
  prefix: string;
  /** An S3-compatible server's URL; default: AWS's endpoint for the region (or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL). */
  endpoint?: string;
  /** Path-style addressing (http://host/bucket/key), which most S3-compatible servers need. */
  pathStyle?: boolean;
  region?: string;
  /** Default: the AWS credential chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

/** The object is absent (a missing bucket is not: it is a misconfiguration, and says so). */
function notFound(err: unknown): boolean {
  const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  if (e?.name === "NoSuchBucket" || e?.Code === "NoSuchBucket") return false;
  return e?.name === "NotFound" || e?.name === "NoSuchKey" || e?.$metadata?.httpStatusCode === 404;
}

export class S3ObjectStore implements ObjectStore {
  readonly url: string;
  private readonly client: S3Client;
  private readonly endpoint: string | undefined;

  constructor(private readonly opts: S3ObjectStoreOptions) {
    this.url = `s3://${opts.bucket}/${opts.prefix}`;
    const endpoint = opts.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
    this.endpoint = endpoint;
    const config: S3ClientConfig = {
      region: opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1",
      forcePathStyle: opts.pathStyle ?? endpoint !== undefined,
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      maxAttempts: 3,
    };
    if (endpoint) config.endpoint = endpoint;
    if (opts.credentials) config.credentials = opts.credentials;
    this.client = new S3Client(config);
  }

  private name(key: string): string {
    return this.opts.prefix + checkKey(key);
  }

  private async send<T>(what: string, signal: AbortSignal, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof ObjectStoreUnavailable) throw err;
      if (signal.aborted) throw new ObjectStoreUnavailable(`${what} in ${this.url} did not finish in time (${String(signal.reason?.message ?? signal.reason)})`);
      const e = err as Error & { Code?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === "NoSuchBucket" || e.Code === "NoSuchBucket") {
        throw new ObjectStoreUnavailable(`${what} in ${this.url} failed: the bucket '${this.opts.bucket}' does not exist${this.endpoint ? ` at ${this.endpoint}` : ""}; create it, or fix --object-store (and --object-store-endpoint).`);
      }
      const status = err instanceof S3ServiceException ? ` (HTTP ${e.$metadata?.httpStatusCode ?? "?"}, ${e.name})` : "";
      throw new ObjectStoreUnavailable(`${what} in ${this.url} failed${status}: ${e.message || e.name}`);
    }
  }

  async put(key: string, file: string, signal: AbortSignal, progress?: (bytes: number) => void): Promise<ObjectInfo> {
    const Key = this.name(key);
    const Bucket = this.opts.bucket;
    return this.send(`Putting ${key}`, signal, async () => {
      const size = (await stat(file)).size;
      const hash = createHash("sha256");
      for await (const chunk of createReadStream(file, { signal })) hash.update(chunk as Buffer);
      const sha256 = hash.digest("hex");
      const Metadata = { sha256 };
      const fd = await open(file, "r");
      try {
        const part = async (index: number): Promise<Buffer> => {
          const start = index * PART_BYTES;
          const buf = Buffer.alloc(Math.min(PART_BYTES, size - start));
          let at = 0;
          while (at < buf.length) {
            const { bytesRead } = await fd.read(buf, at, buf.length - at, start + at);
            if (bytesRead === 0) throw new Error(`${file} shrank while it was uploaded`);
            at += bytesRead;
          }
          return buf;
        };
        if (size <= PART_BYTES) {
          await this.client.send(new PutObjectCommand({ Bucket, Key, Body: await part(0), ContentLength: size, Metadata }), { abortSignal: signal });
          progress?.(size);
          return { key, size, sha256 };
        }
        const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket, Key, Metadata }), { abortSignal: signal });
        try {
          const count = Math.ceil(size / PART_BYTES);
          const etags: string[] = new Array(count);
          let next = 0;
          let sent = 0;
          // One part failing stops the others (they are aborted and awaited) before the upload is aborted.
          const stop = new AbortController();
          const parts = AbortSignal.any([signal, stop.signal]);
          const worker = async () => {
            while (next < count && !parts.aborted) {
              const i = next++;
              const body = await part(i);
              const { ETag } = await this.client.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: i + 1, Body: body, ContentLength: body.length }), { abortSignal: parts });
              etags[i] = ETag!;
              sent += body.length;
              progress?.(sent);
            }
          };
          const settled = await Promise.allSettled(Array.from({ length: Math.min(PARALLEL_PARTS, count) }, () => worker().catch((err: unknown) => {
            stop.abort(err);
            throw err;
          })));
          const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
          if (failed) throw stop.signal.reason ?? failed.reason;
          await this.client.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }), { abortSignal: signal });
        } catch (err) {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId }), { abortSignal: AbortSignal.timeout(30_000) }).catch(() => undefined);
          throw err;
        }
        return { key, size, sha256 };
      } finally {
        await fd.close();
      }
    });
  }

  async get(key: string, file: string, signal: AbortSignal, progress?: (bytes: number) => void): Promise<ObjectInfo | undefined> {
    return this.send(`Getting ${key}`, signal, async () => {
      let res;
      try {
        res = await this.client.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: this.name(key) }), { abortSignal: signal });
      } catch (err) {
        if (notFound(err)) return undefined;
        throw err;
      }
      const expected = { size: res.ContentLength ?? -1, sha256: res.Metadata?.sha256 ?? "" };
      const tmp = `${file}.lmvm-partial-${randomBytes(6).toString("hex")}`;
      try {
        const got = await copyHashing(res.Body as Readable, tmp, signal, progress);
        if (got.size !== expected.size || got.sha256 !== expected.sha256) {
          throw new ObjectStoreUnavailable(`${key} in ${this.url} is not what was put (${got.size} bytes, sha256 ${got.sha256}; it should be ${expected.size} bytes, sha256 ${expected.sha256 || "(none recorded)"})`);
        }
        renameSync(tmp, file);
        return { key, ...got };
      } finally {
        rmSync(tmp, { force: true });
      }
    });
  }

  async head(key: string, signal: AbortSignal): Promise<ObjectInfo | undefined> {
    return this.send(`Looking up ${key}`, signal, async () => {
      try {
        const res = await this.client.send(new HeadObjectCommand({ Bucket: this.opts.bucket, Key: this.name(key) }), { abortSignal: signal });
        return { key, size: res.ContentLength ?? 0, sha256: res.Metadata?.sha256 ?? "" };
      } catch (err) {
        if (notFound(err)) return undefined;
        throw err;
      }
    });
  }

  async list(prefix: string, signal: AbortSignal): Promise<{ key: string; size: number }[]> {
    checkPrefix(prefix);
    return this.send(`Listing ${prefix}`, signal, async () => {
      const out: { key: string; size: number }[] = [];
      let ContinuationToken: string | undefined;
      do {
        const res = await this.client.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: this.opts.prefix + prefix, ...(ContinuationToken ? { ContinuationToken } : {}) }), { abortSignal: signal });
        for (const o of res.Contents ?? []) {
          out.push({ key: o.Key!.slice(this.opts.prefix.length), size: o.Size ?? 0 });
        }
        ContinuationToken = res.IsTruncated ? res.NextContinuationToken : undefined;
      } while (ContinuationToken);
      return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    });
  }

  async delete(key: string, signal: AbortSignal): Promise<void> {
    return this.send(`Deleting ${key}`, signal, async () => {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.opts.bucket, Key: this.name(key) }), { abortSignal: signal });
    });
  }

  async deletePrefix(prefix: string, signal: AbortSignal): Promise<number> {
    checkPrefix(prefix);
    if (prefix === "") throw new ObjectStoreUnavailable("Deleting every object at once is refused: give a prefix.");
    const doomed = await this.list(prefix, signal);
    // One DeleteObject each: DeleteObjects needs a Content-MD5 or checksum that not every S3-compatible server accepts.
    for (const o of doomed) await this.delete(o.key, signal);
    return doomed.length;
  }

  destroy(): void {
    this.client.destroy();
  }
}
