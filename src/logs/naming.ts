// Where a MicroVM's or a build's output shows up as CloudWatch Logs: its log
// group and log stream. The image's `logging` covers its builds and its
// MicroVMs; RunMicrovm's `logging`, when given, overrides the image's for that
// MicroVM (effectiveLogging). `{disabled: {}}` keeps nothing;
// `{cloudWatch: {logGroup, logStream}}` names the group and stream, each
// defaulting as below.
//
// Default group: /aws/lambda-microvms/<image-name>. AWS's pages disagree: the
// images and troubleshooting pages say /aws/lambda/microvms/<image-name>, the
// Claude Managed Agents integration page uses /aws/lambda-microvms/<image-name>,
// and that is the name the service creates; lmvm follows the service.
// Default streams: microvms/<microvm-id> for a MicroVM (the name ends with its
// id, as the service's do) and builds/<version>/<architecture>/<build-id> for a
// build, so a stream-name prefix selects all of either.

import { parseArn, type Build, type Logging, type Microvm } from "../core/index.js";

export const DEFAULT_GROUP_PREFIX = "/aws/lambda-microvms/";

/** What a log file is, as CloudWatch Logs shows it. */
export interface LogSource {
  kind: "microvm" | "build";
  /** MicroVM id or build id: also the log file's name. */
  id: string;
  accountId: string;
  group: string;
  stream: string;
}

export function imageNameOf(imageArn: string): string {
  return parseArn(imageArn)?.resourceId ?? imageArn;
}

/**
 * The logging that applies: RunMicrovm's if given, else the image version's;
 * a RunMicrovm `cloudWatch` that leaves out logGroup or logStream takes the
 * image's (a MicroVM named into its own stream stays in the image's group).
 */
export function effectiveLogging(run: Logging | undefined, image: Logging | undefined): Logging | undefined {
  if (!run) return image;
  if (run.disabled || !image?.cloudWatch) return run;
  return { cloudWatch: { ...image.cloudWatch, ...run.cloudWatch } };
}

export function microvmSource(vm: Microvm, imageLogging: Logging | undefined): LogSource | undefined {
  const logging = effectiveLogging(vm.config.logging, imageLogging);
  if (logging?.disabled) return undefined;
  return {
    kind: "microvm",
    id: vm.id,
    accountId: vm.accountId,
    group: logging?.cloudWatch?.logGroup ?? `${DEFAULT_GROUP_PREFIX}${imageNameOf(vm.imageArn)}`,
    stream: logging?.cloudWatch?.logStream ?? `microvms/${vm.id}`,
  };
}

export function buildSource(build: Build, imageLogging: Logging | undefined): LogSource | undefined {
  if (imageLogging?.disabled) return undefined;
  return {
    kind: "build",
    id: build.buildId,
    accountId: parseArn(build.imageArn)?.account ?? "",
    group: imageLogging?.cloudWatch?.logGroup ?? `${DEFAULT_GROUP_PREFIX}${imageNameOf(build.imageArn)}`,
    stream: imageLogging?.cloudWatch?.logStream ?? `builds/${build.imageVersion}/${build.architecture}/${build.buildId}`,
  };
}
