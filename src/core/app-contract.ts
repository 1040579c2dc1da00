// What the platform and the app inside a MicroVM agree on, as AWS Lambda
// MicroVMs defines it: where lifecycle hooks are served, and the port lmvm's
// in-sandbox hook relay listens on (the relay makes hook calls reach the app
// from 127.0.0.1, as they do on AWS; the endpoint never forwards to it).

/** Every lifecycle hook is `POST <HOOK_PATH_PREFIX><hook>` on the image's hooks port. */
export const HOOK_PATH_PREFIX = "/aws/lambda-microvms/runtime/v1/";

/** The port inside every sandbox where lmvm's hook relay listens. Reserved: the endpoint refuses it. */
export const HOOK_RELAY_PORT = 65_531;

/** Variables the platform sets in every build and MicroVM; an image may not set them in environmentVariables. */
export const RESERVED_ENVIRONMENT_VARIABLES = ["AWS_REGION", "AWS_LAMBDA_MICROVM_IMAGE_NAME", "AWS_LAMBDA_MICROVM_IMAGE_ARN", "AWS_LAMBDA_MICROVM_IMAGE_VERSION"] as const;

/**
 * The reserved variables' values for a version of an image: its Region, name,
 * ARN and version. They are the same for every build step and every MicroVM
 * of the version (MicroVMs are restored from the version's snapshot, whose
 * app process was started with them).
 */
export function reservedEnvironment(imageArn: string, version: string): Record<(typeof RESERVED_ENVIRONMENT_VARIABLES)[number], string> {
  // arn:aws:lambda:<region>:<account>:microvm-image:<name>
  const parts = imageArn.split(":");
  return {
    AWS_REGION: parts[3] ?? "",
    AWS_LAMBDA_MICROVM_IMAGE_NAME: parts.slice(6).join(":"),
    AWS_LAMBDA_MICROVM_IMAGE_ARN: imageArn,
    AWS_LAMBDA_MICROVM_IMAGE_VERSION: version,
  };
}

/**
 * The hooks port of a version recorded before images had to name one (lmvm used the app's port
 * then). New images cannot enable a hook without `hooks.port`; the runtime and the endpoint's
 * hook-path refusal both use this for the old records, so they agree.
 */
export const UNNAMED_HOOKS_PORT = 8080;
