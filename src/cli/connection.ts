// How the CLI finds the control API and its credentials without being told:
// the local server's data directory has server.json (where it listens) and
// credentials (the root keys). Flags and the usual AWS variables win.

import { existsSync, readFileSync } from "node:fs";
import { LambdaMicrovmsClient } from "@aws-sdk/client-lambda-microvms";
// The leaf, not ../server/index.js: that would load the whole server into every CLI call.
import { defaultDataDir, parseCredentialsFile, paths, readServerInfo } from "../server/data-paths.js";
import { UsageError } from "./flags.js";

export interface ConnectionOptions {
  endpointUrl?: string;
  region?: string;
  profile?: string;
  dataDir?: string;
}

export interface Connection {
  endpoint: string;
  region: string;
  /** Undefined: the AWS SDK's default chain (~/.aws/credentials, …) applies. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
}

/** Where the control API is and which credentials sign for it. */
export function resolveConnection(opts: ConnectionOptions): Connection {
  const dataDir = opts.dataDir ?? defaultDataDir();
  const info = readServerInfo(dataDir);
  const endpoint = opts.endpointUrl ?? process.env.LMVM_ENDPOINT_URL ?? info?.apiEndpoint ?? "http://127.0.0.1:7600";
  const region = opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? info?.region ?? "us-east-1";
  const file = paths(dataDir).credentials;
  let credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | undefined;
  if (process.env.AWS_ACCESS_KEY_ID && process.env.AWS_SECRET_ACCESS_KEY) {
    // A role session's temporary key comes with its token (AWS_SESSION_TOKEN), as for the AWS CLI.
    const token = process.env.AWS_SESSION_TOKEN;
    credentials = { accessKeyId: process.env.AWS_ACCESS_KEY_ID, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY, ...(token ? { sessionToken: token } : {}) };
  } else if (existsSync(file)) {
    credentials = parseCredentialsFile(readFileSync(file, "utf8"), opts.profile ?? "default");
    if (!credentials) throw new UsageError(`The config profile (${opts.profile ?? "default"}) could not be found in ${file}.`);
  }
  return { endpoint, region, ...(credentials ? { credentials } : {}) };
}

export function connect(opts: ConnectionOptions): LambdaMicrovmsClient {
  const { endpoint, region, credentials } = resolveConnection(opts);
  // Without credentials, the SDK's default chain (~/.aws/credentials, …) applies.
  return new LambdaMicrovmsClient({ endpoint, region, ...(credentials ? { credentials } : {}) });
}
