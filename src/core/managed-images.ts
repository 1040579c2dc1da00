// Managed base images: the MicroVM operating systems lmvm provides, named by
// ARNs in the `aws` account (arn:aws:lambda:<region>:aws:microvm-image:<name>).
// The catalog says which exist; src/builder makes their root filesystems.

import { managedImageArn, parseArn } from "./arn.js";
import { InvalidInput, NotFound } from "./errors.js";
import type { ManagedImageVersion, Page, PageRequest } from "./model.js";
import type { Clock, Store } from "./ports.js";

export interface ManagedImageDefinition {
  name: string;
  versions: string[];
  description: string;
}

/** The images every lmvm server offers. A new recipe version is a new entry in `versions`. */
export const MANAGED_IMAGES: ManagedImageDefinition[] = [
  { name: "debian12", versions: ["1"], description: "Debian 12 with ca-certificates, Node.js, Python 3 and a shell" },
  { name: "busybox", versions: ["1"], description: "A tiny BusyBox userland, for fast tests" },
];

export interface ManagedImageSummary {
  arn: string;
  createdAt: Date;
  updatedAt: Date;
}

export class ManagedImages {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly region: string,
    private readonly catalog: ManagedImageDefinition[] = MANAGED_IMAGES,
  ) {}

  /** Records every catalog version once; re-running keeps the first creation time. */
  async register(): Promise<void> {
    const existing = await this.store.listManagedImageVersions(undefined, { limit: 10_000 });
    for (const def of this.catalog) {
      for (const version of def.versions) {
        if (existing.items.some((v) => v.name === def.name && v.version === version)) continue;
        const now = this.clock.now();
        await this.store.upsertManagedImageVersion({ name: def.name, version, status: "AVAILABLE", createdAt: now, updatedAt: now });
      }
    }
  }

  arn(name: string): string {
    return managedImageArn(this.region, name);
  }

  private available(): string {
    return this.catalog.map((d) => `${this.arn(d.name)} (versions ${d.versions.join(", ")})`).join("; ");
  }

  /** The managed image name an ARN or bare name designates, or undefined. */
  private nameOf(identifier: string): string | undefined {
    if (!identifier.startsWith("arn:")) return this.catalog.some((d) => d.name === identifier) ? identifier : undefined;
    const arn = parseArn(identifier);
    if (!arn || arn.account !== "aws" || arn.region !== this.region || arn.resourceType !== "microvm-image") return undefined;
    return this.catalog.some((d) => d.name === arn.resourceId) ? arn.resourceId : undefined;
  }

  async list(page: PageRequest): Promise<Page<ManagedImageSummary>> {
    const all = await this.store.listManagedImageVersions(undefined, { limit: 10_000 });
    const names = [...new Set(all.items.map((v) => v.name))].sort();
    const start = page.after ? names.findIndex((n) => n > page.after!) : 0;
    const slice = start < 0 ? [] : names.slice(start, start + page.limit);
    const items = slice.map((name) => {
      const versions = all.items.filter((v) => v.name === name);
      return {
        arn: this.arn(name),
        createdAt: new Date(Math.min(...versions.map((v) => v.createdAt.getTime()))),
        updatedAt: new Date(Math.max(...versions.map((v) => v.updatedAt.getTime()))),
      };
    });
    const last = slice.at(-1);
    const more = start >= 0 && start + page.limit < names.length;
    return { items, ...(more && last ? { next: last } : {}) };
  }

  async versions(identifier: string, page: PageRequest): Promise<Page<ManagedImageVersion>> {
    const name = this.nameOf(identifier);
    if (!name) throw new NotFound("ManagedMicrovmImage", identifier, `Managed image '${identifier}' does not exist. Available: ${this.available()}.`);
    return this.store.listManagedImageVersions(name, page);
  }

  /** Checks a CreateMicrovmImage base image choice; returns the version it pins. */
  async resolve(baseImageArn: string, baseImageVersion: string | undefined): Promise<{ name: string; version: string }> {
    const name = this.nameOf(baseImageArn);
    if (!name || !baseImageArn.startsWith("arn:")) {
      throw new InvalidInput(`baseImageArn '${baseImageArn}' is not a managed image. Available: ${this.available()}.`);
    }
    const versions = (await this.store.listManagedImageVersions(name, { limit: 10_000 })).items;
    const usable = versions.filter((v) => v.status === "AVAILABLE");
    if (baseImageVersion === undefined) {
      const latest = usable.sort((a, b) => Number(b.version) - Number(a.version))[0];
      if (!latest) throw new InvalidInput(`Managed image ${baseImageArn} has no AVAILABLE version.`);
      return { name, version: latest.version };
    }
    if (!usable.some((v) => v.version === baseImageVersion)) {
      throw new InvalidInput(
        `baseImageVersion '${baseImageVersion}' is not an available version of ${baseImageArn}. ` +
          `Available: ${usable.map((v) => v.version).join(", ") || "none"}.`,
      );
    }
    return { name, version: baseImageVersion };
  }
}
