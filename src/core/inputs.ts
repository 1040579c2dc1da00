// One schema per operation input: it validates the request and gives the core
// its argument types. Field names are the SDK's; limits are the service's
// documented ones. A failed parse becomes one InvalidInput whose message lists
// every field at fault and what it must be.

import { z } from "zod";
import { RESERVED_ENVIRONMENT_VARIABLES } from "./app-contract.js";
import { IMAGE_NAME_PATTERN, IMAGE_VERSION_PATTERN } from "./arn.js";
import { InvalidInput } from "./errors.js";
import { MAX_MEMORY_MIB, SIZES_TEXT } from "./limits.js";

const MAX_RUN_HOOK_PAYLOAD_BYTES = 16_384;
const MAX_ENV_BYTES = 4_096;
export const MAX_DURATION_SECONDS = 28_800;
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1_000;

/** No field may hold U+0000: PostgreSQL's text cannot store it, and no identifier or setting needs it. */
const noNul = (s: string) => !s.includes("\0");
const NO_NUL = "must not contain the NUL character (U+0000)";
const text = (min: number, max: number) =>
  z.string().min(min, `must be at least ${min} characters long`).max(max, `must be at most ${max} characters long`).refine(noNul, NO_NUL);
const noSpaces = (max: number) => text(1, max).regex(/^\S+$/, "must not contain whitespace");
const intIn = (min: number, max: number) =>
  z.number().int("must be a whole number").min(min, `must be at least ${min}`).max(max, `must be at most ${max}`);

const clientToken = text(1, 128).optional();
const imageIdentifier = noSpaces(2048);
const imageVersion = z
  .string()
  .regex(IMAGE_VERSION_PATTERN, "must be a version string of the form major.minor, for example 1.0");
const maxResults = intIn(1, MAX_PAGE_SIZE).optional();
const nextToken = text(1, 4096).optional();
const microvmIdentifier = noSpaces(2048);
const hookState = z.enum(["ENABLED", "DISABLED"], "must be ENABLED or DISABLED");

/** A Smithy union: exactly one member set. */
function exactlyOne<T extends z.ZodRawShape>(shape: T) {
  const keys = Object.keys(shape);
  return z.object(shape).superRefine((value, ctx) => {
    const set = keys.filter((k) => (value as Record<string, unknown>)[k] !== undefined);
    if (set.length !== 1) {
      ctx.addIssue({
        code: "custom",
        message: `must set exactly one of ${keys.join(", ")}; it sets ${set.length ? set.join(" and ") : "none"}`,
      });
    }
  });
}

const emptyStruct = z.object({}).strict();

const logging = exactlyOne(
  {
    disabled: emptyStruct.optional(),
    // CloudWatch Logs' own name rules, so a name that could not exist there is refused here.
    cloudWatch: z
      .object({
        logGroup: text(1, 512).regex(/^[.\-_/#A-Za-z0-9]+$/, "must be a CloudWatch Logs group name: letters, digits and . - _ / # only").optional(),
        logStream: text(1, 512).regex(/^[^:*]+$/, "must be a CloudWatch Logs stream name: no ':' or '*'").optional(),
      })
      .strict()
      .optional(),
  }
);

const codeArtifact = exactlyOne({ uri: noSpaces(2048).optional() }).refine(
  (a) => a.uri === undefined || /^(s3:\/\/[^/]+\/.+|file:\/\/\/.+|https:\/\/.+)$/.test(a.uri),
  { message: "must be s3://bucket/key, file:///absolute/path or https://host/path", path: ["uri"] },
);

const tags = z
  .record(
    text(1, 128).refine((k) => !k.toLowerCase().startsWith("aws:"), "tag keys must not start with the reserved prefix aws:"),
    text(0, 256),
  )
  .refine((t) => Object.keys(t).length <= 50, "a resource can have at most 50 tags");

const environmentVariables = z
  .record(
    z.string().regex(/^[A-Za-z][A-Za-z0-9_]*$/, "environment variable names start with a letter and use only letters, digits and _"),
    z.string().refine(noNul, NO_NUL),
  )
  .refine(
    (env) => Buffer.byteLength(JSON.stringify(env)) <= MAX_ENV_BYTES,
    `environment variables must total at most ${MAX_ENV_BYTES} bytes`,
  )
  // The service's own words; the platform sets these in every build and MicroVM.
  .superRefine((env, ctx) => {
    for (const key of RESERVED_ENVIRONMENT_VARIABLES) {
      if (key in env) ctx.addIssue({ code: "custom", message: `Environment variable key '${key}' is reserved: it is set for you in every build and MicroVM; remove it from environmentVariables.`, params: { verbatim: true } });
    }
  });

const hooks = z.object({
  port: intIn(1, 65535).optional(),
  microvmHooks: z
    .object({
      run: hookState.optional(),
      runTimeoutInSeconds: intIn(1, 60).optional(),
      resume: hookState.optional(),
      resumeTimeoutInSeconds: intIn(1, 60).optional(),
      suspend: hookState.optional(),
      suspendTimeoutInSeconds: intIn(1, 60).optional(),
      terminate: hookState.optional(),
      terminateTimeoutInSeconds: intIn(1, 60).optional(),
    })
    .optional(),
  microvmImageHooks: z
    .object({
      ready: hookState.optional(),
      readyTimeoutInSeconds: intIn(1, 3600).optional(),
      validate: hookState.optional(),
      validateTimeoutInSeconds: intIn(1, 3600).optional(),
    })
    .optional(),
}).superRefine((h, ctx) => {
  const runtime = (["run", "resume", "suspend", "terminate"] as const).filter((k) => h.microvmHooks?.[k] === "ENABLED");
  const build = (["ready", "validate"] as const).filter((k) => h.microvmImageHooks?.[k] === "ENABLED");
  if ((runtime.length || build.length) && h.port === undefined) {
    ctx.addIssue({ code: "custom", path: ["port"], message: `is required when a hook is ENABLED (${[...build, ...runtime].join(", ")}): give the port your app serves /aws/lambda-microvms/runtime/v1/<hook> on, for example 9000` });
  }
  if (runtime.length && h.microvmImageHooks?.ready !== "ENABLED") {
    ctx.addIssue({ code: "custom", path: ["microvmImageHooks", "ready"], message: `must be ENABLED when a MicroVM hook is ENABLED (${runtime.join(", ")}): enable the ready hook, which tells the build when the app is initialised, or disable those hooks` });
  }
});

const imageConfig = {
  baseImageArn: noSpaces(2048),
  baseImageVersion: text(1, 64).optional(),
  buildRoleArn: noSpaces(2048).regex(
    /^arn:aws[a-z-]*:iam::[0-9]{12}:role\/[A-Za-z0-9+=,.@_\/-]{1,512}$/,
    "must be an IAM role ARN such as arn:aws:iam::123456789012:role/MicroVMBuildRole",
  ),
  description: text(0, 256).optional(),
  codeArtifact,
  logging: logging.optional(),
  egressNetworkConnectors: z.array(noSpaces(2048)).max(10, "at most 10 connectors").optional(),
  cpuConfigurations: z
    .array(z.object({ architecture: text(1, 32) }))
    .min(1, "list at least one CPU configuration, or leave the field out")
    .max(4, "at most 4 CPU configurations")
    .optional(),
  resources: z
    .array(
      z.object({
        // Any amount up to the largest size's baseline: it gets the smallest size that has at least that much (core/limits.ts).
        minimumMemoryInMiB: z
          .number()
          .int("must be a whole number")
          .min(1, "must be at least 1")
          .max(MAX_MEMORY_MIB, `must be at most ${MAX_MEMORY_MIB}, the largest size's baseline memory; a MicroVM gets the smallest of these sizes (baseline memory/vCPU, peak memory/vCPU, disk) whose baseline memory is at least what it asks for: ${SIZES_TEXT}`),
      }),
    )
    .max(1, "give at most one resources entry: an image has a single size")
    .optional(),
  additionalOsCapabilities: z.array(z.enum(["ALL"], "the only capability is ALL")).max(1).optional(),
  hooks: hooks.optional(),
  environmentVariables: environmentVariables.optional(),
};

const portSpec = exactlyOne(
  {
    port: intIn(1, 65535).optional(),
    range: z
      .object({ startPort: intIn(1, 65535), endPort: intIn(1, 65535) })
      .refine((r) => r.startPort <= r.endPort, "range.startPort must not exceed range.endPort")
      .optional(),
    allPorts: emptyStruct.optional(),
  }
);

const idlePolicy = z.object({
  maxIdleDurationSeconds: intIn(60, MAX_DURATION_SECONDS),
  suspendedDurationSeconds: intIn(0, MAX_DURATION_SECONDS),
  autoResumeEnabled: z.boolean("must be true or false"),
});

const list = { maxResults, nextToken };

export const inputs = {
  CreateMicrovmImage: z.object({ ...imageConfig, name: z.string().regex(IMAGE_NAME_PATTERN, "must be 1-128 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"), tags: tags.optional(), clientToken }),
  UpdateMicrovmImage: z.object({ ...imageConfig, imageIdentifier, clientToken }),
  GetMicrovmImage: z.object({ imageIdentifier }),
  ListMicrovmImages: z.object({ ...list, nameFilter: text(1, 128).optional() }),
  DeleteMicrovmImage: z.object({ imageIdentifier }),
  ListMicrovmImageVersions: z.object({ ...list, imageIdentifier }),
  GetMicrovmImageVersion: z.object({ imageIdentifier, imageVersion }),
  UpdateMicrovmImageVersion: z.object({
    imageIdentifier,
    imageVersion,
    status: z.enum(["ACTIVE", "INACTIVE"], "must be ACTIVE or INACTIVE"),
  }),
  DeleteMicrovmImageVersion: z.object({ imageIdentifier, imageVersion }),
  ListMicrovmImageBuilds: z.object({
    ...list,
    imageIdentifier,
    imageVersion,
    architecture: text(1, 32).optional(),
    chipset: text(1, 32).optional(),
    chipsetGeneration: text(1, 64).optional(),
  }),
  GetMicrovmImageBuild: z.object({ imageIdentifier, imageVersion, buildId: noSpaces(128) }),
  ListManagedMicrovmImages: z.object(list),
  ListManagedMicrovmImageVersions: z.object({ ...list, imageIdentifier }),
  RunMicrovm: z.object({
    imageIdentifier: imageIdentifier.regex(
      /^arn:/,
      "must be the image's ARN (arn:aws:lambda:<region>:<account>:microvm-image:<name>), not its name",
    ),
    imageVersion: imageVersion.optional(),
    ingressNetworkConnectors: z.array(noSpaces(2048)).max(10, "at most 10 connectors").optional(),
    egressNetworkConnectors: z.array(noSpaces(2048)).max(10, "at most 10 connectors").optional(),
    executionRoleArn: noSpaces(2048)
      .regex(/^arn:aws[a-z-]*:iam::[0-9]{12}:role\/[A-Za-z0-9+=,.@_\/-]{1,512}$/, "must be an IAM role ARN")
      .optional(),
    idlePolicy: idlePolicy.optional(),
    logging: logging.optional(),
    runHookPayload: z
      .string()
      .refine(
        (p) => Buffer.byteLength(p) <= MAX_RUN_HOOK_PAYLOAD_BYTES,
        `must be at most ${MAX_RUN_HOOK_PAYLOAD_BYTES} bytes`,
      )
      .optional(),
    maximumDurationInSeconds: intIn(1, MAX_DURATION_SECONDS).optional(),
    clientToken,
  }),
  GetMicrovm: z.object({ microvmIdentifier }),
  ListMicrovms: z.object({ ...list, imageIdentifier: imageIdentifier.optional(), imageVersion: imageVersion.optional() }),
  SuspendMicrovm: z.object({ microvmIdentifier }),
  ResumeMicrovm: z.object({ microvmIdentifier }),
  TerminateMicrovm: z.object({ microvmIdentifier }),
  CreateMicrovmAuthToken: z.object({
    microvmIdentifier,
    expirationInMinutes: intIn(1, 60),
    allowedPorts: z.array(portSpec).min(1, "list at least one port specification").max(100),
  }),
  CreateMicrovmShellAuthToken: z.object({ microvmIdentifier, expirationInMinutes: intIn(1, 60) }),
  TagResource: z.object({ Resource: noSpaces(2048), Tags: tags }),
  UntagResource: z.object({
    Resource: noSpaces(2048),
    TagKeys: z.array(text(1, 128)).min(1, "list at least one tag key").max(50, "at most 50 tag keys"),
  }),
  ListTags: z.object({ Resource: noSpaces(2048) }),
} as const;

export type OperationName = keyof typeof inputs;
export type Input<Op extends OperationName> = z.infer<(typeof inputs)[Op]>;

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === "custom" && (issue.params as { verbatim?: boolean } | undefined)?.verbatim) return issue.message;
  const path = issue.path.length ? issue.path.map(String).join(".") : "(request)";
  if (issue.code === "invalid_key") return `'${path}' ${issue.issues.map((i) => i.message).join("; ")}`;
  if (issue.code === "invalid_type" && (issue as { input?: unknown }).input === undefined) {
    return `'${path}' is required`;
  }
  if (issue.code === "invalid_type") return `'${path}' must be ${issue.expected === "int" ? "a whole number" : `a ${issue.expected}`}`;
  return `'${path}' ${issue.message}`;
}

export function parseInput<Op extends OperationName>(op: Op, raw: unknown): Input<Op> {
  const result = inputs[op].safeParse(raw, { reportInput: true });
  if (result.success) return result.data as Input<Op>;
  const issues = result.error.issues.map(describeIssue);
  throw new InvalidInput(
    `${issues.length} validation error${issues.length > 1 ? "s" : ""} detected: ${issues.join("; ")}`,
  );
}
