// The CloudWatch Logs operations lmvm answers for its logs, on JSON values in
// the shapes of the CloudWatch Logs API (awsJson1_1): DescribeLogGroups,
// DescribeLogStreams, GetLogEvents and FilterLogEvents. No HTTP here: the
// route in src/api feeds it a parsed body and sends back what it returns, or
// the LogsError it throws.
//
// A stream is every log file with that group and stream name (MicroVMs run with
// the same logStream share one), its events merged by time. An event's id is
// its log file and logical offset, which stay the same after older lines are
// dropped, so paging and `aws logs tail --follow` neither skip nor repeat.

import type { LogLine } from "../os/index.js";
import type { LogCatalog } from "./catalog.js";
import { BadPattern, compilePattern } from "./filter-pattern.js";
import type { LogSource } from "./naming.js";

export class LogsError extends Error {
  constructor(
    readonly type: "InvalidParameterException" | "ResourceNotFoundException" | "UnknownOperationException" | "SerializationException",
    message: string,
  ) {
    super(message);
  }
}

export const LOGS_OPERATIONS = ["DescribeLogGroups", "DescribeLogStreams", "GetLogEvents", "FilterLogEvents"] as const;
export type LogsOperation = (typeof LOGS_OPERATIONS)[number];

/** The input members each operation takes; any other member is refused, not ignored. */
const MEMBERS: Record<LogsOperation, string[]> = {
  DescribeLogGroups: ["logGroupNamePrefix", "logGroupNamePattern", "nextToken", "limit", "logGroupIdentifiers"],
  DescribeLogStreams: ["logGroupName", "logGroupIdentifier", "logStreamNamePrefix", "orderBy", "descending", "nextToken", "limit"],
  GetLogEvents: ["logGroupName", "logGroupIdentifier", "logStreamName", "startTime", "endTime", "nextToken", "limit", "startFromHead", "unmask"],
  FilterLogEvents: ["logGroupName", "logGroupIdentifier", "logStreamNames", "logStreamNamePrefix", "startTime", "endTime", "filterPattern", "nextToken", "limit", "interleaved", "unmask"],
};

interface Event extends LogLine {
  source: LogSource;
}

/** An event's place in time order: (timestamp, log file, offset). */
type Key = [number, string, number];

function keyOf(e: Event): Key {
  return [e.timestamp, e.source.id, e.offset];
}

function compare(a: Key, b: Key): number {
  return a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0) || a[2] - b[2];
}

const byKey = (a: Event, b: Event) => compare(keyOf(a), keyOf(b));

function keyText(k: Key): string {
  return `${k[0]}/${k[1]}/${k[2]}`;
}

function parseKey(text: string): Key | undefined {
  const m = /^(\d{1,15})\/([A-Za-z0-9-]{0,64})\/(\d{1,15})$/.exec(text);
  return m ? [Number(m[1]), m[2]!, Number(m[3])] : undefined;
}

const START: Key = [0, "", 0];

function invalid(message: string): LogsError {
  return new LogsError("InvalidParameterException", message);
}

function constraint(member: string, value: unknown, rule: string): LogsError {
  return invalid(`1 validation error detected: Value '${typeof value === "object" ? JSON.stringify(value) : String(value)}' at '${member}' failed to satisfy constraint: ${rule}`);
}

function str(input: Record<string, unknown>, name: string, min = 1, max = 512): string | undefined {
  const v = input[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw constraint(name, v, "Member must be a string");
  if (v.length < min) throw constraint(name, v, `Member must have length greater than or equal to ${min}`);
  if (v.length > max) throw constraint(name, v.slice(0, 40) + "...", `Member must have length less than or equal to ${max}`);
  return v;
}

function int(input: Record<string, unknown>, name: string, min: number, max: number): number | undefined {
  const v = input[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v)) throw constraint(name, v, "Member must be a whole number");
  if (v < min) throw constraint(name, v, `Member must have value greater than or equal to ${min}`);
  if (v > max) throw constraint(name, v, `Member must have value less than or equal to ${max}`);
  return v;
}

function bool(input: Record<string, unknown>, name: string): boolean | undefined {
  const v = input[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw constraint(name, v, "Member must be true or false");
  return v;
}

function tokenOf(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

function untoken<T>(token: string, check: (v: unknown) => v is T): T {
  try {
    const v: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    if (check(v)) return v;
  } catch {
    // falls through
  }
  throw invalid("The specified nextToken is invalid: pass the nextToken of the previous page of the same request unchanged.");
}

const MAX_TIME = 8_640_000_000_000_000; // the largest Date

export class CloudWatchLogsService {
  constructor(
    private readonly catalog: LogCatalog,
    private readonly scope: { region: string },
  ) {}

  async call(operation: string, input: Record<string, unknown>, accountId: string): Promise<Record<string, unknown>> {
    if (!(LOGS_OPERATIONS as readonly string[]).includes(operation)) {
      throw new LogsError(
        "UnknownOperationException",
        `lmvm answers the CloudWatch Logs operations ${LOGS_OPERATIONS.join(", ")} for its MicroVMs' and builds' logs; ${operation || "(none)"} is not one of them.`,
      );
    }
    const op = operation as LogsOperation;
    for (const name of Object.keys(input)) {
      if (!MEMBERS[op].includes(name)) throw invalid(`${op} has no member '${name}' that lmvm supports; it takes ${MEMBERS[op].join(", ")}.`);
    }
    if (input.unmask === true) throw invalid("lmvm has no data protection policies, so there is nothing to unmask: leave 'unmask' out.");
    const sources = await this.catalog.sources(accountId);
    switch (op) {
      case "DescribeLogGroups":
        return this.describeLogGroups(input, sources, accountId);
      case "DescribeLogStreams":
        return this.describeLogStreams(input, sources, accountId);
      case "GetLogEvents":
        return this.getLogEvents(input, sources);
      case "FilterLogEvents":
        return this.filterLogEvents(input, sources);
    }
  }

  private groupArn(accountId: string, group: string): string {
    return `arn:aws:logs:${this.scope.region}:${accountId}:log-group:${group}`;
  }

  /** The group named by logGroupName or logGroupIdentifier (a name or an ARN), and its sources. */
  private group(input: Record<string, unknown>, sources: LogSource[]): { name: string; sources: LogSource[] } {
    const name = str(input, "logGroupName");
    const identifier = str(input, "logGroupIdentifier", 1, 2048);
    if (name !== undefined && identifier !== undefined) throw invalid("LogGroup name and LogGroup ARN are mutually exclusive parameters.");
    let group = name ?? identifier;
    if (group === undefined) throw invalid("Either logGroupName or logGroupIdentifier must be specified.");
    if (identifier?.startsWith("arn:")) {
      const m = /^arn:aws:logs:([^:]*):(\d{12}):log-group:(.+?)(:\*)?$/.exec(identifier);
      if (!m) throw invalid(`'${identifier}' is not a log group ARN (arn:aws:logs:<region>:<account>:log-group:<name>).`);
      if (m[1] !== this.scope.region) throw new LogsError("ResourceNotFoundException", `The specified log group does not exist: ${identifier} is in region ${m[1]}, and this lmvm server is ${this.scope.region}.`);
      group = m[3]!;
    }
    const mine = sources.filter((s) => s.group === group);
    if (!mine.length) throw new LogsError("ResourceNotFoundException", "The specified log group does not exist.");
    return { name: group, sources: mine };
  }

  private describeLogGroups(input: Record<string, unknown>, sources: LogSource[], accountId: string): Record<string, unknown> {
    const prefix = str(input, "logGroupNamePrefix");
    const pattern = str(input, "logGroupNamePattern", 0);
    const identifiers = input.logGroupIdentifiers;
    const limit = int(input, "limit", 1, 50) ?? 50;
    if (prefix !== undefined && pattern !== undefined) throw invalid("LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.");
    if (identifiers !== undefined && (prefix !== undefined || pattern !== undefined)) throw invalid("logGroupIdentifiers cannot be combined with logGroupNamePrefix or logGroupNamePattern.");
    if (identifiers !== undefined && (!Array.isArray(identifiers) || identifiers.length < 1 || identifiers.length > 50 || !identifiers.every((i) => typeof i === "string"))) {
      throw constraint("logGroupIdentifiers", identifiers, "Member must be a list of 1 to 50 log group names or ARNs");
    }
    const wanted = identifiers ? new Set((identifiers as string[]).map((i) => /^arn:aws:logs:[^:]*:\d{12}:log-group:(.+?)(:\*)?$/.exec(i)?.[1] ?? i)) : undefined;
    const groups = new Map<string, { created: number; bytes: number }>();
    for (const s of sources) {
      if (prefix !== undefined && !s.group.startsWith(prefix)) continue;
      if (pattern !== undefined && !s.group.toLowerCase().includes(pattern.toLowerCase())) continue;
      if (wanted && !wanted.has(s.group)) continue;
      const stats = this.catalog.stats(s);
      if (!stats) continue;
      const g = groups.get(s.group) ?? { created: stats.created, bytes: 0 };
      g.created = Math.min(g.created, stats.created);
      g.bytes += stats.bytes;
      groups.set(s.group, g);
    }
    const after = input.nextToken === undefined || input.nextToken === null ? undefined : untoken(str(input, "nextToken")!, (v): v is string => typeof v === "string");
    const names = [...groups.keys()].sort().filter((n) => after === undefined || n > after);
    const page = names.slice(0, limit);
    return {
      logGroups: page.map((name) => {
        const g = groups.get(name)!;
        const arn = this.groupArn(accountId, name);
        return { logGroupName: name, creationTime: Math.round(g.created), metricFilterCount: 0, arn: `${arn}:*`, storedBytes: g.bytes, logGroupClass: "STANDARD", logGroupArn: arn };
      }),
      ...(names.length > limit ? { nextToken: tokenOf(page.at(-1)) } : {}),
    };
  }

  /** The group's streams: name to sources. */
  private streams(sources: LogSource[]): Map<string, LogSource[]> {
    const streams = new Map<string, LogSource[]>();
    for (const s of sources) streams.set(s.stream, [...(streams.get(s.stream) ?? []), s]);
    return streams;
  }

  private describeLogStreams(input: Record<string, unknown>, all: LogSource[], accountId: string): Record<string, unknown> {
    const prefix = str(input, "logStreamNamePrefix");
    const orderBy = str(input, "orderBy") ?? "LogStreamName";
    if (orderBy !== "LogStreamName" && orderBy !== "LastEventTime") throw constraint("orderBy", orderBy, "Member must satisfy enum value set: [LogStreamName, LastEventTime]");
    if (orderBy === "LastEventTime" && prefix !== undefined) throw invalid("Cannot order by LastEventTime with a logStreamNamePrefix.");
    const descending = bool(input, "descending") ?? false;
    const limit = int(input, "limit", 1, 50) ?? 50;
    const group = this.group(input, all);
    const rows = [...this.streams(group.sources)]
      .filter(([name]) => prefix === undefined || name.startsWith(prefix))
      .map(([name, sources]) => {
        const stats = sources.map((s) => this.catalog.stats(s)).filter((s) => s !== undefined);
        const firsts = stats.map((s) => s.first).filter((t) => t !== undefined);
        const lasts = stats.map((s) => s.last).filter((t) => t !== undefined);
        return {
          logStreamName: name,
          creationTime: Math.round(Math.min(...stats.map((s) => s.created))),
          ...(firsts.length ? { firstEventTimestamp: Math.min(...firsts), lastEventTimestamp: Math.max(...lasts), lastIngestionTime: Math.max(...lasts) } : {}),
          arn: `${this.groupArn(accountId, group.name)}:log-stream:${name}`,
          storedBytes: stats.reduce((n, s) => n + s.bytes, 0),
        };
      });
    const sortKey = (r: (typeof rows)[number]): [number, string] => [orderBy === "LastEventTime" ? (r.lastEventTimestamp ?? 0) : 0, r.logStreamName];
    const cmp = (a: [number, string], b: [number, string]) => (a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0)) * (descending ? -1 : 1);
    rows.sort((a, b) => cmp(sortKey(a), sortKey(b)));
    const isPos = (v: unknown): v is [number, string] => Array.isArray(v) && v.length === 2 && typeof v[0] === "number" && typeof v[1] === "string";
    const after = input.nextToken === undefined || input.nextToken === null ? undefined : untoken(str(input, "nextToken")!, isPos);
    const rest = after ? rows.filter((r) => cmp(sortKey(r), after) > 0) : rows;
    const page = rest.slice(0, limit);
    return { logStreams: page, ...(rest.length > limit ? { nextToken: tokenOf(sortKey(page.at(-1)!)) } : {}) };
  }

  private events(sources: LogSource[], since: number | undefined): Event[] {
    const events: Event[] = [];
    const now = Date.now();
    for (const source of sources) for (const line of this.catalog.lines(source, { ...(since !== undefined ? { since } : {}), now })) events.push({ ...line, source });
    return events.sort(byKey);
  }

  private timeRange(input: Record<string, unknown>): { start: number; end: number } {
    const start = int(input, "startTime", 0, MAX_TIME) ?? 0;
    const end = int(input, "endTime", 0, MAX_TIME) ?? MAX_TIME;
    if (end < start) throw invalid(`endTime (${end}) is before startTime (${start}): give an endTime at or after the startTime.`);
    return { start, end };
  }

  private getLogEvents(input: Record<string, unknown>, all: LogSource[]): Record<string, unknown> {
    const group = this.group(input, all);
    const streamName = str(input, "logStreamName");
    if (streamName === undefined) throw constraint("logStreamName", "null", "Member must not be null");
    const { start, end } = this.timeRange(input);
    const limit = int(input, "limit", 1, 10_000) ?? 10_000;
    const fromHead = bool(input, "startFromHead") ?? false;
    const token = str(input, "nextToken");
    let direction: "f" | "b" = fromHead ? "f" : "b";
    let from: Key | undefined;
    if (token !== undefined) {
      const m = /^([fb])\/(.+)$/.exec(token);
      const key = m ? parseKey(m[2]!) : undefined;
      if (!m || !key) throw invalid("The specified nextToken is invalid: pass a nextForwardToken or nextBackwardToken of an earlier GetLogEvents unchanged.");
      direction = m[1] as "f" | "b";
      from = key;
    }
    const sources = group.sources.filter((s) => s.stream === streamName);
    if (!sources.length) throw new LogsError("ResourceNotFoundException", "The specified log stream does not exist.");
    const events = this.events(sources, start > 0 ? start : undefined).filter((e) => e.timestamp >= start && e.timestamp < end);
    let page: Event[];
    if (direction === "f") {
      const rest = from ? events.filter((e) => compare(keyOf(e), from) > 0) : events;
      page = rest.slice(0, limit);
    } else {
      const before = from ? events.filter((e) => compare(keyOf(e), from) < 0) : events;
      page = before.slice(Math.max(0, before.length - limit));
    }
    // An empty page keeps its tokens where they were, so a reader polling forward waits at the end.
    const last = page.at(-1);
    const first = page[0];
    const forward = last ? keyOf(last) : direction === "f" && from ? from : (events.at(-1) ? keyOf(events.at(-1)!) : START);
    const backward = first ? keyOf(first) : direction === "b" && from ? from : (events[0] ? keyOf(events[0]) : START);
    return {
      events: page.map((e) => ({ timestamp: e.timestamp, message: e.message, ingestionTime: e.timestamp })),
      nextForwardToken: `f/${keyText(forward)}`,
      nextBackwardToken: `b/${keyText(backward)}`,
    };
  }

  private filterLogEvents(input: Record<string, unknown>, all: LogSource[]): Record<string, unknown> {
    const group = this.group(input, all);
    const names = input.logStreamNames;
    const prefix = str(input, "logStreamNamePrefix");
    if (names !== undefined && names !== null) {
      if (!Array.isArray(names) || names.length < 1 || names.length > 100 || !names.every((n) => typeof n === "string" && n.length >= 1 && n.length <= 512)) {
        throw constraint("logStreamNames", names, "Member must be a list of 1 to 100 log stream names");
      }
      if (prefix !== undefined) throw invalid("logStreamNames and logStreamNamePrefix are mutually exclusive parameters.");
    }
    bool(input, "interleaved"); // deprecated by AWS: events are always interleaved by time, as they are here
    const { start, end } = this.timeRange(input);
    const limit = int(input, "limit", 1, 10_000) ?? 10_000;
    let match;
    try {
      match = compilePattern(str(input, "filterPattern", 0, 1024));
    } catch (err) {
      if (err instanceof BadPattern) throw invalid(err.message);
      throw err;
    }
    const wanted = Array.isArray(names) ? new Set(names as string[]) : undefined;
    const sources = group.sources.filter((s) => (wanted ? wanted.has(s.stream) : prefix === undefined || s.stream.startsWith(prefix)));
    if (wanted) {
      const missing = [...wanted].filter((n) => !sources.some((s) => s.stream === n));
      if (missing.length === wanted.size) throw new LogsError("ResourceNotFoundException", `The specified log stream does not exist: ${missing.join(", ")}.`);
    }
    const isKey = (v: unknown): v is Key => Array.isArray(v) && v.length === 3 && typeof v[0] === "number" && typeof v[1] === "string" && typeof v[2] === "number";
    const after = input.nextToken === undefined || input.nextToken === null ? undefined : untoken(str(input, "nextToken")!, isKey);
    const since = Math.max(start, after?.[0] ?? 0);
    const rest = this.events(sources, since > 0 ? since : undefined).filter(
      (e) => e.timestamp >= start && e.timestamp < end && (!after || compare(keyOf(e), after) > 0) && match(e.message),
    );
    const page = rest.slice(0, limit);
    return {
      events: page.map((e) => ({ logStreamName: e.source.stream, timestamp: e.timestamp, message: e.message, ingestionTime: e.timestamp, eventId: `${e.source.id}-${e.offset}` })),
      searchedLogStreams: [...new Set(sources.map((s) => s.stream))].sort().map((logStreamName) => ({ logStreamName, searchedCompletely: rest.length <= limit })),
      ...(rest.length > limit ? { nextToken: tokenOf(keyOf(page.at(-1)!)) } : {}),
    };
  }
}
