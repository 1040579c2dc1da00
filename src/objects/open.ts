// `lmvm server --object-store <url>`: which adapter a URL names.

import { ObjectStoreUnavailable, type ObjectStore } from "../core/index.js";
import { FileObjectStore } from "./file.js";
import { S3ObjectStore } from "./s3.js";

export interface ObjectStoreConfig {
  /** s3://bucket[/prefix] or file:///absolute/path. */
  url: string;
  /** An S3-compatible server (--object-store-endpoint); default AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS. */
  endpoint?: string;
  /** Path-style S3 addressing; default: on when an endpoint is set, off for AWS. */
  pathStyle?: boolean;
  /** Default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1. */
  region?: string;
  /** Default: the AWS credential chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

/** The adapter for the URL; throws with what to fix when the URL names none. */
export function openObjectStore(config: ObjectStoreConfig): ObjectStore {
  const { url } = config;
  const s3 = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (s3) {
    let prefix = s3[2] ?? "";
    if (prefix && !prefix.endsWith("/")) prefix += "/";
    if (prefix && !/^([A-Za-z0-9._-]+\/)+$/.test(prefix)) throw new ObjectStoreUnavailable(`--object-store: the prefix in '${url}' must be a path of letters, digits, '.', '_', '-' and '/'.`);
    if (config.endpoint !== undefined && !/^https?:\/\/[^/]+/.test(config.endpoint)) throw new ObjectStoreUnavailable(`--object-store-endpoint must be an http:// or https:// URL; got '${config.endpoint}'.`);
    return new S3ObjectStore({
      bucket: s3[1]!, prefix,
      ...(config.endpoint ? { endpoint: config.endpoint } : {}),
      ...(config.pathStyle !== undefined ? { pathStyle: config.pathStyle } : {}),
      ...(config.region ? { region: config.region } : {}),
      ...(config.credentials ? { credentials: config.credentials } : {}),
    });
  }
  const file = /^file:\/\/(\/.*)$/.exec(url);
  if (file) return new FileObjectStore(decodeURIComponent(file[1]!).replace(/\/+$/, "") || "/");
  throw new ObjectStoreUnavailable(`--object-store must be s3://bucket[/prefix] (an S3 bucket, with --object-store-endpoint for an S3-compatible server) or file:///absolute/path (a directory every host mounts); got '${url}'.`);
}
