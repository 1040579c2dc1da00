// MicroVM images, their versions and their builds: creation, updates,
// deletion, and the bookkeeping that keeps an image's state and its
// latestActive/latestFailed versions in step with its builds.

import { randomUUID } from "node:crypto";
import { IMAGE_ARN_PATTERN, imageArn, type Scope } from "./arn.js";
import type { ConnectorService } from "./connectors.js";
import { InvalidInput, NotFound, ResourceInUse, StateConflict } from "./errors.js";
import { once } from "./idempotency.js";
import { checkWarmPoolTags } from "./warm-pools.js";
import type { Input } from "./inputs.js";
import type { ManagedImages } from "./managed-images.js";
import { DEFAULT_QUOTAS, quotaExceeded, type Quotas } from "./quotas.js";
import type {
  Build, ImageConfig, ImageState, ImageVersion, MicrovmImage, Page, PageRequest, VersionOrigin, VersionState,
} from "./model.js";
import type { BuildFilter, Clock, HostPlatform, Store } from "./ports.js";
import { buildStates, imageStates, versionStateFromBuilds, versionStates } from "./states.js";

export interface ImageView {
  image: MicrovmImage;
  tags: Record<string, string>;
}

export interface ImageVersionView {
  image: MicrovmImage;
  version: ImageVersion;
  tags: Record<string, string>;
}

export interface ImageServiceDeps {
  store: Store;
  clock: Clock;
  scope: Scope;
  host: HostPlatform;
  managed: ManagedImages;
  /** Called after a change that gives the build scheduler work. */
  onWork: () => void;
  /** Why new builds wait, when no builder is installed. */
  queuedReason?: string;
  /** The account's quotas (default DEFAULT_QUOTAS): images, versions-per-image and concurrent-builds are enforced here. */
  quotas?: Quotas;
  /** Checks the account connectors an image's egressNetworkConnectors name. */
  connectors: ConnectorService;
}

const LIVE_MICROVM_STATES = ["PENDING", "RUNNING", "SUSPENDING", "SUSPENDED", "TERMINATING"] as const;

export function compareVersions(a: string, b: string): number {
  const [am = 0, an = 0] = a.split(".").map(Number);
  const [bm = 0, bn = 0] = b.split(".").map(Number);
  return am - bm || an - bn;
}

/** Image state once the version its current operation builds has settled. */
function settledImageState(origin: VersionOrigin, version: VersionState): ImageState | undefined {
  if (version === "SUCCESSFUL") return origin === "CREATE" ? "CREATED" : "UPDATED";
  if (version === "FAILED") return origin === "CREATE" ? "CREATE_FAILED" : "UPDATE_FAILED";
  return undefined;
}

export class ImageService {
  constructor(private readonly deps: ImageServiceDeps) {}

  private get store(): Store {
    return this.deps.store;
  }

  /** Accepts an image ARN or name; the image must exist and not be deleted. */
  async resolve(identifier: string, store: Store = this.store): Promise<MicrovmImage> {
    const arn = this.arnOf(identifier);
    const image = arn && (await store.getImage(arn));
    if (!image || image.accountId !== this.deps.scope.accountId) {
      throw new NotFound("MicrovmImage", identifier, `MicroVM image '${identifier}' does not exist. List images with list-microvm-images.`);
    }
    return image;
  }

  arnOf(identifier: string): string | undefined {
    if (!identifier.startsWith("arn:")) return imageArn(this.deps.scope, identifier);
    // Only the exact form the authoriser names (ResourceNames.image).
    const arn = IMAGE_ARN_PATTERN.exec(identifier);
    const { region, accountId } = this.deps.scope;
    if (!arn) throw new InvalidInput(`'${identifier}' is not a MicroVM image ARN (arn:aws:lambda:${region}:${accountId}:microvm-image:<name>).`);
    if (arn[1] !== region || arn[2] !== accountId) return undefined;
    return imageArn(this.deps.scope, arn[3]!);
  }

  private async checkConfig(config: ImageConfig): Promise<ImageConfig> {
    const base = await this.deps.managed.resolve(config.baseImageArn, config.baseImageVersion);
    if (config.egressNetworkConnectors) await this.deps.connectors.checkExist(config.egressNetworkConnectors, "egressNetworkConnectors");
    for (const cpu of config.cpuConfigurations ?? []) {
      if (cpu.architecture !== this.deps.host.architecture) {
        throw new InvalidInput(
          `cpuConfigurations: architecture '${cpu.architecture}' cannot be built on this host; it builds ${this.deps.host.architecture}.`,
        );
      }
    }
    return { ...config, baseImageVersion: base.version };
  }

  private newBuilds(imageArnValue: string, version: string, config: ImageConfig): Build[] {
    const now = this.deps.clock.now();
    const { architecture, chipset, chipsetGeneration } = this.deps.host;
    const archs = [...new Set((config.cpuConfigurations ?? [{ architecture }]).map((c) => c.architecture))];
    return archs.map((arch) => ({
      buildId: randomUUID(),
      imageArn: imageArnValue,
      imageVersion: version,
      state: "PENDING",
      architecture: arch,
      chipset,
      chipsetGeneration,
      ...(this.deps.queuedReason ? { stateReason: this.deps.queuedReason } : {}),
      attempts: 0,
      createdAt: now,
      updatedAt: now,
    }));
  }

  private async addVersion(tx: Store, image: MicrovmImage, version: string, origin: VersionOrigin, config: ImageConfig) {
    const now = this.deps.clock.now();
    await tx.insertVersion({ imageArn: image.arn, version, origin, state: "PENDING", status: "ACTIVE", config, createdAt: now, updatedAt: now });
    for (const build of this.newBuilds(image.arn, version, config)) await tx.insertBuild(build);
  }

  private get quotas(): Quotas {
    return this.deps.quotas ?? DEFAULT_QUOTAS;
  }

  /** Refuses a new image once the account has `images` of them (images being deleted do not count). */
  private async checkImageQuota(tx: Store): Promise<void> {
    const limit = this.quotas.images;
    const images = (await tx.listImages(this.deps.scope.accountId, undefined, { limit: limit + 1 })).items.filter((i) => i.state !== "DELETING");
    if (images.length < limit) return;
    throw quotaExceeded("images", limit, `This account already has ${images.length} MicroVM images. Delete images you no longer need with delete-microvm-image.`, "MicrovmImage");
  }

  /** Refuses a new version once the image has `versions-per-image` of them (versions being deleted do not count). */
  private async checkVersionQuota(tx: Store, image: MicrovmImage): Promise<void> {
    const limit = this.quotas["versions-per-image"];
    const versions = (await tx.listVersions(image.arn, { limit: limit + 1 })).items.filter((v) => v.state !== "DELETING");
    if (versions.length < limit) return;
    throw quotaExceeded(
      "versions-per-image",
      limit,
      `MicroVM image ${image.arn} already has ${versions.length} versions (${versions[0]?.version} to ${versions.at(-1)?.version}). Delete versions you no longer need with delete-microvm-image-version.`,
      "MicrovmImageVersion",
      { resourceId: image.arn },
    );
  }

  /**
   * Refuses new builds that would take the account's builds that are queued or
   * running (PENDING or IN_PROGRESS) past `concurrent-builds`. The quota is the
   * account's, as in the service; how many of them this host runs at once is
   * the server's --build-concurrency, the rest wait in the queue.
   */
  private async checkBuildQuota(tx: Store, adding: number): Promise<void> {
    const limit = this.quotas["concurrent-builds"];
    const prefix = imageArn(this.deps.scope, "");
    const unfinished: Build[] = [];
    for (const state of ["PENDING", "IN_PROGRESS"] as const) {
      for (const b of await tx.buildsInState(state)) {
        if (!b.imageArn.startsWith(prefix)) continue;
        const v = await tx.getVersion(b.imageArn, b.imageVersion);
        if (v && v.state !== "DELETING") unfinished.push(b);
      }
    }
    if (unfinished.length + adding <= limit) return;
    const names = unfinished.slice(0, 5).map((b) => `${b.imageArn.slice(prefix.length)} ${b.imageVersion} (${b.state})`).join(", ");
    throw quotaExceeded(
      "concurrent-builds",
      limit,
      `This account already has ${unfinished.length} image build${unfinished.length === 1 ? "" : "s"} queued or running: ${names}${unfinished.length > 5 ? ", ..." : ""}. ` +
        "Retry once one has finished (its version is SUCCESSFUL or FAILED), or delete a version whose build you no longer need.",
      "MicrovmImageBuild",
    );
  }

  private configOf(input: Input<"CreateMicrovmImage"> | Input<"UpdateMicrovmImage">): ImageConfig {
    const { clientToken: _t, ...rest } = input as Record<string, unknown>;
    delete rest.name;
    delete rest.tags;
    delete rest.imageIdentifier;
    return rest as unknown as ImageConfig;
  }

  async create(input: Input<"CreateMicrovmImage">): Promise<ImageVersionView> {
    checkWarmPoolTags(input.tags);
    const config = await this.checkConfig(this.configOf(input));
    const { scope, clock } = this.deps;
    const identity = await once(this.store, clock, { accountId: scope.accountId, operation: "CreateMicrovmImage", clientToken: input.clientToken }, input, async (tx) => {
      const arn = imageArn(scope, input.name);
      const existing = await tx.findImageByName(scope.accountId, input.name);
      if (existing) {
        throw new ResourceInUse(
          `A MicroVM image named '${input.name}' already exists (${existing.arn}, ${existing.state}). ` +
            "Image names are unique per account: pick another name, or add a version with update-microvm-image.",
        );
      }
      await this.checkImageQuota(tx);
      await this.checkBuildQuota(tx, this.newBuilds(arn, "1.0", config).length);
      const now = clock.now();
      const image: MicrovmImage = { arn, accountId: scope.accountId, name: input.name, state: "CREATING", createdAt: now, updatedAt: now, currentVersion: "1.0", nextMajor: 2 };
      await tx.insertImage(image);
      await this.addVersion(tx, image, "1.0", "CREATE", config);
      if (input.tags) await tx.putTags(arn, input.tags);
      return { imageArn: arn, imageVersion: "1.0" };
    });
    this.deps.onWork();
    return this.versionView(identity.imageArn, identity.imageVersion);
  }

  async update(input: Input<"UpdateMicrovmImage">): Promise<ImageVersionView> {
    const config = await this.checkConfig(this.configOf(input));
    const { scope, clock } = this.deps;
    const identity = await once(this.store, clock, { accountId: scope.accountId, operation: "UpdateMicrovmImage", clientToken: input.clientToken }, input, async (tx) => {
      const image = await this.resolve(input.imageIdentifier, tx);
      imageStates.check(image.arn, image.state, "UPDATING", "update");
      const version = `${image.nextMajor}.0`;
      await this.checkVersionQuota(tx, image);
      await this.checkBuildQuota(tx, this.newBuilds(image.arn, version, config).length);
      await tx.updateImage(image.arn, { state: "UPDATING", stateReason: undefined, currentVersion: version, nextMajor: image.nextMajor + 1, updatedAt: clock.now() });
      await this.addVersion(tx, image, version, "UPDATE", config);
      return { imageArn: image.arn, imageVersion: version };
    });
    this.deps.onWork();
    return this.versionView(identity.imageArn, identity.imageVersion);
  }

  private async versionView(arn: string, version: string): Promise<ImageVersionView> {
    const image = await this.resolve(arn);
    const v = await this.store.getVersion(arn, version);
    if (!v) throw new NotFound("MicrovmImageVersion", `${arn}:${version}`);
    return { image, version: v, tags: await this.store.getTags(arn) };
  }

  async get(identifier: string): Promise<ImageView> {
    const image = await this.resolve(identifier);
    return { image, tags: await this.store.getTags(image.arn) };
  }

  list(nameFilter: string | undefined, page: PageRequest): Promise<Page<MicrovmImage>> {
    return this.store.listImages(this.deps.scope.accountId, nameFilter, page);
  }

  private async refuseIfMicrovmsRun(tx: Store, image: MicrovmImage, version?: string): Promise<void> {
    const live = await tx.microvmsInStates([...LIVE_MICROVM_STATES], { imageArn: image.arn, ...(version ? { imageVersion: version } : {}) });
    if (live.length) {
      const what = version ? `version ${version} of ${image.arn}` : image.arn;
      throw new StateConflict(
        version ? "MicrovmImageVersion" : "MicrovmImage",
        image.arn,
        `Cannot delete ${what}: ${live.length} MicroVM${live.length > 1 ? "s" : ""} still run from it (${live.slice(0, 5).map((m) => m.id).join(", ")}). Terminate them first.`,
      );
    }
  }

  async delete(identifier: string): Promise<MicrovmImage> {
    const image = await this.store.transaction(async (tx) => {
      const image = await this.resolve(identifier, tx);
      imageStates.check(image.arn, image.state, "DELETING", "delete");
      await this.refuseIfMicrovmsRun(tx, image);
      const now = this.deps.clock.now();
      await tx.updateImage(image.arn, { state: "DELETING", stateReason: undefined, updatedAt: now });
      return { ...image, state: "DELETING" as const, updatedAt: now };
    });
    this.deps.onWork();
    return image;
  }

  async listVersions(identifier: string, page: PageRequest): Promise<{ page: Page<ImageVersion>; tags: Record<string, string> }> {
    const image = await this.resolve(identifier);
    return { page: await this.store.listVersions(image.arn, page), tags: await this.store.getTags(image.arn) };
  }

  private async resolveVersion(identifier: string, version: string, store: Store = this.store) {
    const image = await this.resolve(identifier, store);
    const v = await store.getVersion(image.arn, version);
    if (!v || v.state === "DELETED") {
      throw new NotFound("MicrovmImageVersion", `${image.arn}:${version}`, `Version ${version} of ${image.arn} does not exist. List versions with list-microvm-image-versions.`);
    }
    return { image, version: v };
  }

  async getVersion(identifier: string, version: string): Promise<ImageVersionView> {
    const found = await this.resolveVersion(identifier, version);
    return { ...found, tags: await this.store.getTags(found.image.arn) };
  }

  async setVersionStatus(input: Input<"UpdateMicrovmImageVersion">): Promise<ImageVersionView> {
    await this.store.transaction(async (tx) => {
      const { image, version } = await this.resolveVersion(input.imageIdentifier, input.imageVersion, tx);
      if (version.state === "DELETING" || version.state === "DELETE_FAILED") {
        throw new StateConflict("MicrovmImageVersion", `${image.arn}:${version.version}`, `Cannot change the status of version ${version.version}: it is ${version.state}.`);
      }
      await tx.updateVersion(image.arn, version.version, { status: input.status, updatedAt: this.deps.clock.now() });
      await this.refreshSummary(tx, image.arn);
    });
    return this.getVersion(input.imageIdentifier, input.imageVersion);
  }

  async deleteVersion(identifier: string, versionId: string): Promise<ImageVersion> {
    const deleted = await this.store.transaction(async (tx) => {
      const { image, version } = await this.resolveVersion(identifier, versionId, tx);
      versionStates.check(`${image.arn}:${versionId}`, version.state, "DELETING", "delete");
      await this.refuseIfMicrovmsRun(tx, image, versionId);
      const now = this.deps.clock.now();
      await tx.updateVersion(image.arn, versionId, { state: "DELETING", updatedAt: now });
      if (image.currentVersion === versionId && (image.state === "CREATING" || image.state === "UPDATING")) {
        const to = image.state === "CREATING" ? "CREATE_FAILED" : "UPDATE_FAILED";
        await tx.updateImage(image.arn, { state: to, stateReason: `Version ${versionId} was deleted before its build finished.`, updatedAt: now });
      }
      await this.refreshSummary(tx, image.arn);
      return { ...version, state: "DELETING" as const, updatedAt: now };
    });
    this.deps.onWork();
    return deleted;
  }

  async listBuilds(input: Input<"ListMicrovmImageBuilds">, page: PageRequest): Promise<Page<Build>> {
    const { image, version } = await this.resolveVersion(input.imageIdentifier, input.imageVersion);
    const filter: BuildFilter = {};
    if (input.architecture) filter.architecture = input.architecture;
    if (input.chipset) filter.chipset = input.chipset;
    if (input.chipsetGeneration) filter.chipsetGeneration = input.chipsetGeneration;
    return this.store.listBuilds(image.arn, version.version, filter, page);
  }

  async getBuild(identifier: string, versionId: string, buildId: string): Promise<Build> {
    const { image } = await this.resolveVersion(identifier, versionId);
    const build = await this.store.getBuild(buildId);
    if (!build || build.imageArn !== image.arn || build.imageVersion !== versionId) {
      throw new NotFound("MicrovmImageBuild", buildId, `Build '${buildId}' of version ${versionId} of ${image.arn} does not exist. List builds with list-microvm-image-builds.`);
    }
    return build;
  }

  /**
   * Moves a build to a new state, then lets its version follow its builds and
   * its image follow the version the image's current operation builds.
   */
  async moveBuild(tx: Store, build: Build, to: Build["state"], patch: Partial<Build> = {}): Promise<void> {
    buildStates.check(build.buildId, build.state, to, `move to ${to}`);
    const now = this.deps.clock.now();
    await tx.updateBuild(build.buildId, { ...patch, state: to, updatedAt: now });
    const version = await tx.getVersion(build.imageArn, build.imageVersion);
    if (!version || version.state === "DELETING" || version.state === "DELETED") return;
    const builds = (await tx.listBuilds(build.imageArn, build.imageVersion, {}, { limit: 1000 })).items;
    const next = versionStateFromBuilds(builds.map((b) => (b.buildId === build.buildId ? to : b.state)));
    if (next !== version.state) {
      versionStates.check(`${version.imageArn}:${version.version}`, version.state, next, `move to ${next}`);
      const failed = builds.find((b) => b.buildId === build.buildId ? to === "FAILED" : b.state === "FAILED");
      const reason = next === "FAILED" ? `Build ${failed?.buildId} (${failed?.architecture}) failed: ${failed?.buildId === build.buildId ? patch.stateReason : failed?.stateReason}` : undefined;
      await tx.updateVersion(version.imageArn, version.version, { state: next, stateReason: reason, updatedAt: now });
      const image = await tx.getImage(version.imageArn);
      const settled = settledImageState(version.origin, next);
      if (image && settled && image.currentVersion === version.version && (image.state === "CREATING" || image.state === "UPDATING")) {
        imageStates.check(image.arn, image.state, settled, `move to ${settled}`);
        await tx.updateImage(image.arn, { state: settled, stateReason: reason, updatedAt: now });
      }
      await this.refreshSummary(tx, version.imageArn);
    }
  }

  /** Keeps latestActiveImageVersion and latestFailedImageVersion current. */
  async refreshSummary(tx: Store, arn: string): Promise<void> {
    const versions = (await tx.listVersions(arn, { limit: 100_000 })).items.sort((a, b) => compareVersions(b.version, a.version));
    const active = versions.find((v) => v.state === "SUCCESSFUL" && v.status === "ACTIVE");
    const failed = versions.find((v) => v.state === "FAILED");
    await tx.updateImage(arn, { latestActiveImageVersion: active?.version, latestFailedImageVersion: failed?.version });
  }
}
