// `lmvm aws-models install|path`: puts the botocore models lmvm generates from
// the AWS SDK (src/aws-models) where the AWS CLI and boto3 find them.

import { resolve } from "node:path";
import { installModels, shippedModels, userModelsDir } from "../aws-models/install.js";
import { shippedModelsDir } from "../aws-models/models.js";
import { UsageError } from "./flags.js";

export const AWS_MODELS_HELP = `NAME
    aws-models

DESCRIPTION
    The AWS CLI and boto3 read a service's API from a botocore model. Theirs
    have none for lambda-microvms (Debian's awscli 2.9 and python3-boto3 1.26,
    and awscli 1.x), so lmvm ships one, generated at build time from the
    official @aws-sdk/client-lambda-microvms schemas. Once installed,
    \`aws lambda-microvms <command> --endpoint-url <lmvm>\` and
    \`boto3.client("lambda-microvms", endpoint_url=<lmvm>)\` work.

SYNOPSIS
    lmvm aws-models install [--dir <directory>]
        Copies the models to <directory>/<service>/<apiVersion>/ (default
        ~/.aws/models, which every botocore searches first). Run it again
        after upgrading lmvm.
    lmvm aws-models path
        Prints the directory of the shipped models, for AWS_DATA_PATH:
        AWS_DATA_PATH=$(lmvm aws-models path) aws lambda-microvms help
`;

export function awsModelsCommand(args: string[]): number {
  const [sub, ...rest] = args;
  if (!sub || sub === "help" || sub === "--help" || rest.includes("--help") || rest[0] === "help") {
    process.stdout.write(AWS_MODELS_HELP);
    return 0;
  }
  if (sub === "path") {
    if (rest.length) throw new UsageError(`Unknown options: ${rest.join(", ")}\nSee 'lmvm aws-models help'.`);
    shippedModels(); // says what to run when the build made none
    process.stdout.write(`${shippedModelsDir()}\n`);
    return 0;
  }
  if (sub === "install") {
    let dir = userModelsDir();
    for (let i = 0; i < rest.length; i++) {
      const arg = rest[i]!;
      if (arg === "--dir" && rest[i + 1] !== undefined) dir = resolve(rest[++i]!);
      else if (arg.startsWith("--dir=")) dir = resolve(arg.slice("--dir=".length));
      else throw new UsageError(`${arg === "--dir" ? "--dir needs a directory" : `Unknown option: ${arg}`}\nSee 'lmvm aws-models help'.`);
    }
    process.stdout.write(`Installing the AWS CLI and boto3 models into ${dir}\n`);
    const installed = installModels(dir, (m) => process.stdout.write(`  ${m.service} ${m.apiVersion}: ${m.files.join(", ")} → ${m.dir}\n`));
    const services = installed.map((m) => m.service);
    process.stdout.write(
      `Done. Try: aws ${services[0]} list-microvms --endpoint-url http://127.0.0.1:7600\n` +
        (dir === userModelsDir() ? "" : `botocore reads models from ~/.aws/models and from AWS_DATA_PATH; set AWS_DATA_PATH=${dir} unless ${dir} is one of those.\n`),
    );
    return 0;
  }
  throw new UsageError(`Invalid choice: '${sub}'. Run 'lmvm aws-models help'.`);
}
