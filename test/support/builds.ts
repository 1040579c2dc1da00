// Builds version 1.0 of a new image through the SDK and waits for it to end,
// for tests that check a build's outcome.

import {
  CreateMicrovmImageCommand, GetMicrovmImageBuildCommand, GetMicrovmImageVersionCommand, ListMicrovmImageBuildsCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { eventually } from "./platform.js";

export const BUSYBOX = "arn:aws:lambda:us-east-1:aws:microvm-image:busybox";
export const ROLE = "arn:aws:iam::000000000000:role/MicroVMBuildRole";

/** Creates image `name` from the artifact at `uri`; resolves with its version and build once SUCCESSFUL or FAILED. */
export async function buildToEnd(client: LambdaMicrovmsClient, name: string, uri: string, baseImageArn = BUSYBOX) {
  await client.send(new CreateMicrovmImageCommand({ name, baseImageArn, buildRoleArn: ROLE, codeArtifact: { uri } }));
  const version = await eventually(async () => {
    const v = await client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: name, imageVersion: "1.0" }));
    return v.state === "SUCCESSFUL" || v.state === "FAILED" ? v : undefined;
  }, `build of ${name}`, 600_000);
  const builds = await client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: name, imageVersion: "1.0" }));
  const build = await client.send(new GetMicrovmImageBuildCommand({ imageIdentifier: name, imageVersion: "1.0", buildId: builds.items![0]!.buildId }));
  return { version, build };
}
