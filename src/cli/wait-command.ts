// `lmvm wait <waiter> …`: polls a resource until it reaches the state the
// waiter names, as `aws <service> wait` does. Each waiter calls one Get
// operation (its flags are that operation's) every --delay seconds, at most
// --max-attempts times. Exit codes follow the AWS CLI: 0 when the state is
// reached; 255, with `Waiter <Name> failed: …` on stderr, when the resource
// reaches a state it cannot come back from, an error occurs, or the attempts
// run out.

import * as sdk from "@aws-sdk/client-lambda-microvms";
import { OPERATIONS, type OperationModel } from "../api/sdk-model.js";
import { buildInput, kebab, UsageError, type RawArgs } from "./flags.js";

interface Waiter {
  /** PascalCase, as the AWS CLI's messages name waiters. */
  name: string;
  operation: OperationModel;
  /** Where the state is in the response. */
  path: "state" | "buildState";
  success: string[];
  /** States the resource does not leave on its way to success. */
  failure: string[];
  /** A resource that no longer exists has reached this waiter's goal. */
  notFoundIsSuccess?: boolean;
  delaySeconds: number;
  maxAttempts: number;
  doc: string;
}

const IMAGE_GONE = ["DELETING", "DELETED", "DELETE_FAILED"];

export const WAITERS: Record<string, Waiter> = {
  "image-created": {
    name: "ImageCreated", operation: OPERATIONS.GetMicrovmImage, path: "state",
    success: ["CREATED", "UPDATED"], failure: ["CREATE_FAILED", "UPDATE_FAILED", ...IMAGE_GONE],
    delaySeconds: 10, maxAttempts: 120,
    doc: "Wait until the MicroVM image is CREATED (or UPDATED): its current version has built. Fails on CREATE_FAILED, UPDATE_FAILED or deletion.",
  },
  "image-updated": {
    name: "ImageUpdated", operation: OPERATIONS.GetMicrovmImage, path: "state",
    success: ["UPDATED"], failure: ["UPDATE_FAILED", ...IMAGE_GONE],
    delaySeconds: 10, maxAttempts: 120,
    doc: "Wait until an updated MicroVM image is UPDATED: its new version has built. Fails on UPDATE_FAILED or deletion.",
  },
  "image-version-built": {
    name: "ImageVersionBuilt", operation: OPERATIONS.GetMicrovmImageVersion, path: "state",
    success: ["SUCCESSFUL"], failure: ["FAILED", ...IMAGE_GONE],
    delaySeconds: 10, maxAttempts: 120,
    doc: "Wait until the image version's build is SUCCESSFUL. Fails on FAILED or deletion.",
  },
  "microvm-running": {
    name: "MicrovmRunning", operation: OPERATIONS.GetMicrovm, path: "state",
    success: ["RUNNING"], failure: ["TERMINATING", "TERMINATED"],
    delaySeconds: 2, maxAttempts: 150,
    doc: "Wait until the MicroVM is RUNNING (after run-microvm or resume-microvm). Fails once it is TERMINATING or TERMINATED.",
  },
  "microvm-suspended": {
    name: "MicrovmSuspended", operation: OPERATIONS.GetMicrovm, path: "state",
    success: ["SUSPENDED"], failure: ["TERMINATING", "TERMINATED"],
    delaySeconds: 2, maxAttempts: 150,
    doc: "Wait until the MicroVM is SUSPENDED. Fails once it is TERMINATING or TERMINATED.",
  },
  "microvm-terminated": {
    name: "MicrovmTerminated", operation: OPERATIONS.GetMicrovm, path: "state",
    success: ["TERMINATED"], failure: [], notFoundIsSuccess: true,
    delaySeconds: 2, maxAttempts: 150,
    doc: "Wait until the MicroVM is TERMINATED (a MicroVM that no longer exists counts as terminated).",
  },
};

export function waitHelp(): string {
  const lines = ["NAME", "    wait", "", "DESCRIPTION", "    Wait until a particular condition is satisfied. Each subcommand polls a", "    Get operation until a successful state is reached (exit 0), or a failure", "    state, an error or the last attempt is reached (exit 255).", "", "SYNOPSIS", "    lmvm wait <waiter> [options] [--delay <seconds>] [--max-attempts <n>]", "", "AVAILABLE WAITERS"];
  for (const [command, w] of Object.entries(WAITERS)) lines.push(`    ${command.padEnd(22)} ${w.doc}`);
  return `${lines.join("\n")}\n`;
}

export function waiterHelp(command: string, w: Waiter): string {
  const lines = ["NAME", `    ${command}`, "", "DESCRIPTION", `    ${w.doc}`, `    It polls ${kebab(w.operation.name)} every ${w.delaySeconds} seconds until a successful state`, `    is reached. It will exit with a return code of 255 after ${w.maxAttempts} failed checks.`, "", "SYNOPSIS", `    lmvm wait ${command}`];
  for (const m of w.operation.input) lines.push(`        ${m.required ? "" : "["}--${kebab(m.name)} <value>${m.required ? "" : "]"}`);
  lines.push("        [--delay <seconds>]", "        [--max-attempts <n>]", "", "OPTIONS");
  for (const m of w.operation.input) lines.push(`    --${kebab(m.name)} (${m.kind})${m.required ? " [required]" : ""}`);
  lines.push(`    --delay (number)`, `        Seconds between attempts (default ${w.delaySeconds}).`, `    --max-attempts (number)`, `        Attempts before giving up (default ${w.maxAttempts}).`);
  lines.push("", `    Global options as for ${kebab(w.operation.name)}; see 'lmvm ${kebab(w.operation.name)} help'.`);
  return `${lines.join("\n")}\n`;
}

function positive(flag: string, text: string | undefined, fallback: number, whole: boolean): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || (whole && (!Number.isInteger(n) || n < 1))) {
    throw new UsageError(`argument --${flag}: expected ${whole ? "a whole number of at least 1" : "a number of seconds"}, got '${text}'.`);
  }
  return n;
}

type Sendable = { send(command: unknown): Promise<Record<string, unknown>> };

/** Polls until the waiter's outcome; returns the exit code. `args.flags` holds the operation's flags plus --delay and --max-attempts. */
export async function runWaiter(client: Sendable, w: Waiter, args: RawArgs): Promise<number> {
  const delay = positive("delay", args.flags.get("delay")?.at(-1), w.delaySeconds, false);
  const maxAttempts = positive("max-attempts", args.flags.get("max-attempts")?.at(-1), w.maxAttempts, true);
  const input = buildInput(w.operation, args);
  const Command = (sdk as unknown as Record<string, new (input: unknown) => unknown>)[`${w.operation.name}Command`]!;
  const fail = (why: string) => {
    process.stderr.write(`\nWaiter ${w.name} failed: ${why}\n`);
    return 255;
  };
  let last = "";
  for (let attempt = 1; ; attempt++) {
    try {
      const out = await client.send(new Command(input));
      const state = String(out[w.path] ?? "");
      const reason = out.stateReason ? ` (stateReason: ${String(out.stateReason)})` : "";
      last = `${state}${reason}`;
      if (w.success.includes(state)) return 0;
      if (w.failure.includes(state)) return fail(`Waiter encountered a terminal failure state: For expression "${w.path}" we matched expected path: "${state}"${reason}`);
    } catch (err) {
      const e = err as { name?: string; message?: string; $fault?: string };
      if (!e.$fault) throw err; // not an answer from the service (e.g. no connection): main reports it
      if (w.notFoundIsSuccess && e.name === "ResourceNotFoundException") return 0;
      return fail(`An error occurred (${e.name}) when calling the ${w.operation.name} operation: ${e.message}`);
    }
    if (attempt >= maxAttempts) return fail(`Max attempts exceeded (${maxAttempts}, every ${delay} s). Previously accepted state: "${last}"; waiting for ${w.success.join(" or ")}.`);
    await new Promise((r) => setTimeout(r, delay * 1000));
  }
}
