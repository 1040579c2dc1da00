// The botocore models lmvm ships, generated at build time (./build.ts) from the
// official SDK clients in node_modules, and where they are: dist/aws-models/
// <service>/<apiVersion>/*.json, the layout botocore's loader reads from
// ~/.aws/models or from a directory in AWS_DATA_PATH.

import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

/**
 * The SDK clients lmvm generates models from: the services lmvm serves whose
 * botocore (awscli 1.x, Debian's awscli 2.9 and python3-boto3 1.26) has no model.
 * IAM, STS, CloudWatch Logs and CloudTrail are not here: every installed botocore
 * has each operation lmvm serves for them. Lambda Core's network connectors are
 * not here either: no official SDK for them is installed to generate from.
 */
export const MODEL_SOURCES = [{ package: "@aws-sdk/client-lambda-microvms", service: "lambda-microvms" }] as const;

/** dist/aws-models of this installation (this file is dist/src/aws-models/models.js once built). */
export function shippedModelsDir(): string {
  return join(dirname(fileURLToPath(import.meta.url)), "..", "..", "aws-models");
}
