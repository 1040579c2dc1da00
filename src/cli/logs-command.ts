// `lmvm logs build <image> <version> [--follow]` prints a build's log and
// `lmvm logs microvm <id> [--follow]` a MicroVM's app output; with --follow
// they keep printing until the build ends or the MicroVM stops running. They
// read lmvm's SigV4-signed log endpoints, outside the AWS API.

import { ListMicrovmImageBuildsCommand, type LambdaMicrovmsClient } from "@aws-sdk/client-lambda-microvms";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { LMVM_PREFIX } from "../api/wire.js";
import { UsageError } from "./flags.js";

export const LOGS_HELP = `NAME
    logs

DESCRIPTION
    Prints the log of an image build, or the output (stdout and stderr) of a
    MicroVM's app. With --follow, keeps printing as it is written, until the
    build finishes or the MicroVM stops running.

SYNOPSIS
    lmvm logs build <image-name-or-arn> <image-version> [--build-id <id>] [--follow]
    lmvm logs microvm <microvm-id> [--follow]
`;

export async function logsCommand(client: LambdaMicrovmsClient, positionals: string[], flags: Map<string, string[]>): Promise<number> {
  const [kind, first, second] = positionals;
  let path: string;
  if (kind === "build" && first && second) {
    let buildId = flags.get("build-id")?.[0];
    if (!buildId) {
      const builds = await client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: first, imageVersion: second }));
      buildId = builds.items?.[0]?.buildId;
      if (!buildId) throw new UsageError(`Version ${second} of ${first} has no builds.`);
    }
    path = `${LMVM_PREFIX}/microvm-images/${encodeURIComponent(first)}/versions/${encodeURIComponent(second)}/builds/${encodeURIComponent(buildId)}/logs`;
  } else if (kind === "microvm" && first && !second) {
    path = `${LMVM_PREFIX}/microvms/${encodeURIComponent(first)}/logs`;
  } else throw new UsageError(LOGS_HELP);
  const endpoint = await client.config.endpoint!();
  const follow = flags.has("follow");
  const host = `${endpoint.hostname}${endpoint.port ? `:${endpoint.port}` : ""}`;
  const signer = new SignatureV4({ credentials: client.config.credentials, region: await client.config.region(), service: "lambda", sha256: Hash.bind(null, "sha256") });
  const signed = await signer.sign(new HttpRequest({ method: "GET", protocol: endpoint.protocol, hostname: endpoint.hostname, port: endpoint.port, path, query: follow ? { follow: "true" } : {}, headers: { host } }));
  const res = await fetch(`${endpoint.protocol}//${host}${path}${follow ? "?follow=true" : ""}`, { headers: signed.headers as Record<string, string> });
  if (!res.ok) {
    const type = res.headers.get("x-amzn-errortype") ?? `HTTP ${res.status}`;
    const body = (await res.json().catch(() => ({}))) as { message?: string };
    process.stderr.write(`\nAn error occurred (${type}) when reading the ${kind} log: ${body.message ?? ""}\n`);
    return 254;
  }
  for await (const chunk of res.body!) process.stdout.write(chunk);
  return 0;
}
