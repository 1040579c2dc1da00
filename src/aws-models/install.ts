// Copies the shipped botocore models (./models.ts) into a botocore data
// directory: ~/.aws/models by default, which botocore's loader (awscli 1.x
// and 2.x, boto3) searches before its own data.

import { copyFileSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { shippedModelsDir } from "./models.js";

export interface InstalledModel {
  service: string;
  apiVersion: string;
  dir: string;
  files: string[];
}

/** Where `aws` and boto3 look for a user's models: ~/.aws/models. */
export function userModelsDir(): string {
  return join(homedir(), ".aws", "models");
}

/** The shipped models: service → API versions. Throws, saying what to run, when the build has not made them. */
export function shippedModels(source = shippedModelsDir()): { service: string; apiVersion: string; dir: string }[] {
  if (!existsSync(source)) throw new Error(`No AWS CLI models at ${source}: run 'npm run build' in the lmvm directory first (it generates them from the AWS SDK).`);
  const out = [];
  for (const service of readdirSync(source).sort()) {
    for (const apiVersion of readdirSync(join(source, service)).sort()) out.push({ service, apiVersion, dir: join(source, service, apiVersion) });
  }
  if (!out.length) throw new Error(`${source} holds no models: run 'npm run build' again.`);
  return out;
}

/** Installs every shipped model into `target`/<service>/<apiVersion>/, replacing the files of an earlier install. */
export function installModels(target = userModelsDir(), onModel: (m: InstalledModel) => void = () => {}): InstalledModel[] {
  const installed: InstalledModel[] = [];
  for (const model of shippedModels()) {
    const dir = join(target, model.service, model.apiVersion);
    mkdirSync(dir, { recursive: true });
    const files = readdirSync(model.dir).filter((f) => f.endsWith(".json")).sort();
    for (const file of files) copyFileSync(join(model.dir, file), join(dir, file));
    const done = { service: model.service, apiVersion: model.apiVersion, dir, files };
    onModel(done);
    installed.push(done);
  }
  return installed;
}
