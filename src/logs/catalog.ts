// The log files of builds and MicroVMs, seen as CloudWatch Logs sources: each
// file's group and stream, worked out once from its MicroVM or build and the
// logging it had, and written beside the file (<id>.source.json), so the file
// keeps its place after its image version is deleted. Files of MicroVMs and
// builds whose logging was disabled are not sources (none are written).

import { existsSync, readFileSync } from "node:fs";
import type { Build, ImageVersion, Microvm } from "../core/index.js";
import { writeFileAtomic, type LogFiles, type LogLine } from "../os/index.js";
import { buildSource, microvmSource, type LogSource } from "./naming.js";

/** What the catalog asks the store. */
export interface LogLookup {
  getMicrovm(id: string): Promise<Microvm | undefined>;
  getBuild(buildId: string): Promise<Build | undefined>;
  getVersion(imageArn: string, version: string): Promise<ImageVersion | undefined>;
}

export interface LogStats {
  bytes: number;
  created: number;
  first?: number;
  last?: number;
}

export class LogCatalog {
  /** Per "<kind>:<id>": its source, or null when it is none (logging disabled). */
  private readonly known = new Map<string, LogSource | null>();

  constructor(
    private readonly opts: {
      microvms: LogFiles;
      builds: LogFiles;
      lookup: LogLookup;
    },
  ) {}

  private files(kind: LogSource["kind"]): LogFiles {
    return kind === "microvm" ? this.opts.microvms : this.opts.builds;
  }

  private sidecar(kind: LogSource["kind"], id: string): string {
    return this.files(kind).path(id).replace(/\.log$/, ".source.json");
  }

  /** Stamps what every log gained since the last sweep: MicroVMs' output comes from runsc, not through lmvm. */
  sweep(now = Date.now()): void {
    this.opts.microvms.stampAll(now);
    this.opts.builds.stampAll(now);
  }

  /** Every source of `accountId`'s logs. */
  async sources(accountId: string): Promise<LogSource[]> {
    const found: LogSource[] = [];
    for (const kind of ["microvm", "build"] as const) {
      for (const id of this.files(kind).ids()) {
        const source = await this.source(kind, id);
        if (source && source.accountId === accountId) found.push(source);
      }
    }
    return found;
  }

  private async source(kind: LogSource["kind"], id: string): Promise<LogSource | undefined> {
    const key = `${kind}:${id}`;
    const known = this.known.get(key);
    if (known !== undefined) return known ?? undefined;
    const file = this.sidecar(kind, id);
    if (existsSync(file)) {
      try {
        const saved = JSON.parse(readFileSync(file, "utf8")) as LogSource | { disabled: true };
        const source = "disabled" in saved ? null : saved;
        this.known.set(key, source);
        return source ?? undefined;
      } catch {
        // cut short by a crash: worked out again below
      }
    }
    const source = await this.resolve(kind, id);
    if (source === undefined) return undefined; // not in the store (yet): asked again next time
    writeFileAtomic(file, JSON.stringify(source ?? { disabled: true }));
    this.known.set(key, source);
    return source ?? undefined;
  }

  /** The file's source from the store; null when logging was disabled; undefined when the store does not know it. */
  private async resolve(kind: LogSource["kind"], id: string): Promise<LogSource | null | undefined> {
    const { lookup } = this.opts;
    if (kind === "microvm") {
      const vm = await lookup.getMicrovm(id);
      if (!vm) return undefined;
      const version = await lookup.getVersion(vm.imageArn, vm.imageVersion);
      return microvmSource(vm, version?.config.logging) ?? null;
    }
    const build = await lookup.getBuild(id);
    if (!build) return undefined;
    const version = await lookup.getVersion(build.imageArn, build.imageVersion);
    return buildSource(build, version?.config.logging) ?? null;
  }

  lines(source: LogSource, opts: { from?: number; since?: number; now?: number } = {}): LogLine[] {
    return this.files(source.kind).lines(source.id, opts);
  }

  stats(source: LogSource): LogStats | undefined {
    return this.files(source.kind).stats(source.id);
  }
}
