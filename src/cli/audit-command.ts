// `lmvm audit`: reads the audit trail through CloudTrail's LookupEvents with
// the official @aws-sdk/client-cloudtrail, as `aws cloudtrail lookup-events
// --endpoint-url` would. Loaded only when `lmvm audit` runs (src/cli/main.ts).

import { CloudTrailClient, LookupEventsCommand, type Event, type LookupAttributeKey } from "@aws-sdk/client-cloudtrail";
import { resolveConnection, type ConnectionOptions } from "./connection.js";
import { UsageError } from "./flags.js";

export const AUDIT_FLAGS = ["event-name", "user", "access-key-id", "resource-name", "resource-type", "event-source", "event-id", "read-only", "start-time", "end-time", "max-items", "starting-token"];

/** Which flag looks up by which CloudTrail lookup attribute. */
const ATTRIBUTES: [flag: string, key: LookupAttributeKey][] = [
  ["event-name", "EventName"], ["user", "Username"], ["access-key-id", "AccessKeyId"], ["resource-name", "ResourceName"],
  ["resource-type", "ResourceType"], ["event-source", "EventSource"], ["event-id", "EventId"], ["read-only", "ReadOnly"],
];

const DEFAULT_MAX_ITEMS = 50;

export const AUDIT_HELP = `NAME
    audit

DESCRIPTION
    Prints the audit trail: one event per API call made to this lmvm server
    (the MicroVMs API, network connectors, CloudWatch Logs, IAM, STS and
    CloudTrail itself), newest first, whoever made it and however it ended,
    with the principal, access key, source address, operation, resources,
    request parameters (secrets hidden) and error code. Reads it with
    CloudTrail's LookupEvents (the same answers as
    \`aws cloudtrail lookup-events --endpoint-url <lmvm>\`); the caller needs
    cloudtrail:LookupEvents.

SYNOPSIS
    lmvm audit [one filter] [--start-time <time>] [--end-time <time>]
               [--max-items <n>] [--starting-token <token>] [--output table|json]

FILTERS (at most one, as in CloudTrail's LookupEvents)
    --event-name <name>        An operation, e.g. RunMicrovm, CreateUser, AssumeRole.
    --user <name>              An IAM user's name, a role session's name, or root.
    --access-key-id <id>       The access key the calls were signed with (refused ones too).
    --resource-name <name>     A resource's ARN or name (image, MicroVM, connector, user, role...).
    --resource-type <type>     e.g. AWS::Lambda::MicrovmImage, AWS::Lambda::Microvm, AWS::IAM::User.
    --event-source <source>    lambda.amazonaws.com, iam.amazonaws.com, sts.amazonaws.com,
                               logs.amazonaws.com or cloudtrail.amazonaws.com.
    --event-id <id>            One event.
    --read-only true|false     Only reads, or only writes.

OPTIONS
    --start-time <time>        Events at or after: ISO 8601 (2026-11-29T18:00:00Z), seconds
                               since the epoch, or an age such as 30m, 2h, 7d.
    --end-time <time>          Events at or before; same forms.
    --max-items <n>            At most this many events (default ${DEFAULT_MAX_ITEMS}); when there are more,
                               the token to continue with is printed (table: on stderr).
    --starting-token <token>   Continue where a previous call with the same filters stopped.
    --output table|json        table (default): one line per event. json: LookupEvents'
                               Events, each CloudTrailEvent as an object, and NextToken.

GLOBAL OPTIONS
    --endpoint-url, --region, --profile, --data-dir, as for the other commands.
`;

function single(flags: Map<string, string[]>, name: string): string | undefined {
  const v = flags.get(name);
  return v && v.length ? v[v.length - 1] : undefined;
}

/** ISO 8601, epoch seconds, or an age (`90s`, `30m`, `2h`, `7d`) before now. */
export function parseTime(flag: string, value: string, now = Date.now()): Date {
  const age = /^(\d+)([smhd])$/.exec(value);
  if (age) return new Date(now - Number(age[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[age[2] as "s"]! * 1000);
  const d = /^\d+(\.\d+)?$/.test(value) ? new Date(Number(value) * 1000) : new Date(value);
  if (Number.isNaN(d.getTime())) throw new UsageError(`--${flag}: '${value}' is not a time: give ISO 8601 (2026-11-29T18:00:00Z), seconds since the epoch, or an age such as 30m, 2h or 7d.`);
  return d;
}

function parsed(e: Event): Record<string, unknown> {
  try {
    return JSON.parse(e.CloudTrailEvent ?? "{}") as Record<string, unknown>;
  } catch {
    return {};
  }
}

function table(events: Event[]): string {
  const rows = events.map((e) => {
    const record = parsed(e) as { errorCode?: string; sourceIPAddress?: string; userIdentity?: { type?: string } };
    return [
      e.EventTime ? e.EventTime.toISOString().replace(".000Z", "Z") : "",
      e.EventName ?? "",
      (e.EventSource ?? "").replace(".amazonaws.com", ""),
      e.Username ?? (record.userIdentity?.type === "Unknown" ? "(unauthenticated)" : ""),
      e.AccessKeyId ?? "",
      record.sourceIPAddress ?? "",
      (e.Resources ?? []).map((r) => r.ResourceName).join(",") || "-",
      record.errorCode ?? "OK",
    ];
  });
  const header = ["TIME", "EVENT", "SOURCE", "USER", "ACCESS KEY", "FROM", "RESOURCES", "RESULT"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return `${[line(header), ...rows.map(line)].join("\n")}\n`;
}

export async function auditCommand(flags: Map<string, string[]>, positionals: string[], connection: ConnectionOptions): Promise<number> {
  if (positionals.length) throw new UsageError(`Unexpected arguments: ${positionals.join(" ")}\nSee 'lmvm audit help'.`);
  const empty = AUDIT_FLAGS.filter((f) => flags.has(f) && !single(flags, f));
  if (empty.length) throw new UsageError(`${empty.map((f) => `--${f}`).join(", ")}: expected a value.\nSee 'lmvm audit help'.`);
  const output = single(flags, "output") ?? "table";
  if (output !== "table" && output !== "json") throw new UsageError(`argument --output: Invalid choice '${output}', valid choices are: table | json`);
  const given = ATTRIBUTES.filter(([flag]) => flags.has(flag));
  if (given.length > 1) {
    throw new UsageError(`Give at most one filter: CloudTrail looks events up by one attribute at a time; got ${given.map(([f]) => `--${f}`).join(", ")}. Narrow further with --start-time and --end-time.`);
  }
  const readOnly = single(flags, "read-only");
  if (readOnly !== undefined && readOnly !== "true" && readOnly !== "false") throw new UsageError(`--read-only must be true or false; got '${readOnly}'.`);
  const maxText = single(flags, "max-items") ?? String(DEFAULT_MAX_ITEMS);
  if (!/^[1-9]\d*$/.test(maxText)) throw new UsageError(`--max-items must be a whole number of at least 1; got '${maxText}'.`);
  const maxItems = Number(maxText);
  const start = single(flags, "start-time");
  const end = single(flags, "end-time");
  const base = {
    ...(given.length ? { LookupAttributes: [{ AttributeKey: given[0]![1], AttributeValue: single(flags, given[0]![0])! }] } : {}),
    ...(start ? { StartTime: parseTime("start-time", start) } : {}),
    ...(end ? { EndTime: parseTime("end-time", end) } : {}),
  };

  const { endpoint, region, credentials } = resolveConnection(connection);
  const client = new CloudTrailClient({ endpoint, region, ...(credentials ? { credentials } : {}) });
  const events: Event[] = [];
  let token = single(flags, "starting-token");
  try {
    do {
      const page = await client.send(new LookupEventsCommand({ ...base, MaxResults: Math.min(50, maxItems - events.length), ...(token ? { NextToken: token } : {}) }));
      events.push(...(page.Events ?? []));
      token = page.NextToken;
    } while (token && events.length < maxItems);
  } catch (err) {
    const e = err as { name?: string; message?: string; $fault?: string };
    if (!e.$fault) throw err;
    process.stderr.write(`\nAn error occurred (${e.name}) when calling the LookupEvents operation: ${e.message}\n`);
    return 254;
  } finally {
    client.destroy();
  }
  if (output === "json") {
    const out = {
      Events: events.map((e) => ({ ...e, EventTime: e.EventTime?.toISOString(), CloudTrailEvent: parsed(e) })),
      ...(token ? { NextToken: token } : {}),
    };
    process.stdout.write(`${JSON.stringify(out, null, 4)}\n`);
  } else {
    process.stdout.write(events.length ? table(events) : "No events.\n");
    if (token) process.stderr.write(`More events: continue with --starting-token ${token}\n`);
  }
  return 0;
}
