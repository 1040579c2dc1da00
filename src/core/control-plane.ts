// The core's one public face: every control-API operation as a method taking
// the operation's validated input. It wires the services together and owns
// startup recovery; it knows nothing of HTTP, SQL or sandboxes.

import type { Scope } from "./arn.js";
import { BuildScheduler } from "./builds.js";
import { ConnectorService } from "./connectors.js";
import { DEFAULT_EGRESS, type DefaultEgress } from "./egress.js";
import { ImageService } from "./images.js";
import type { Input, OperationName } from "./inputs.js";
import { ManagedImages } from "./managed-images.js";
import { MicrovmService } from "./microvms.js";
import type { PageRequest } from "./model.js";
import type { Clock, HostPlatform, ImageBuilder, NameResolver, RuntimeTimings, SandboxRuntime, Store, TokenIssuer } from "./ports.js";
import { LifecyclePolicies } from "./policies.js";
import { resolveQuotas, type Quotas } from "./quotas.js";
import { RateLimiter, resolveRateLimits, type ConnectorOperationName } from "./rate-limits.js";
import { TagService } from "./tags.js";
import { WarmPools } from "./warm-pools.js";

/** How often RUNNING MicroVMs' sandboxes are checked for having died. */
const SANDBOX_CHECK_MS = 3000;

export interface ControlPlaneOptions {
  store: Store;
  clock: Clock;
  scope: Scope;
  host: HostPlatform;
  tokens: TokenIssuer;
  endpointFor: (microvmId: string) => string;
  builder?: ImageBuilder;
  /** NoSandboxes where the host runs none; whether MicroVMs run never depends on the builder. */
  runtime: SandboxRuntime;
  buildConcurrency?: number;
  log?: (event: Record<string, unknown>) => void;
  timings?: RuntimeTimings;
  /** The operator's quota values over DEFAULT_QUOTAS (src/core/quotas.ts). */
  quotas?: Partial<Quotas>;
  /** The operator's requests per second over DEFAULT_RATE_LIMITS (src/core/rate-limits.ts); `*` sets all. */
  rateLimits?: Partial<Record<string, number>>;
  /** Looks up the host names of network connectors (src/server/name-resolver.ts); without one, a connector naming a host fails to provision. */
  resolver?: NameResolver;
  /** The egress of a MicroVM whose RunMicrovm names no egress connector (default: the documentation's, INTERNET_EGRESS). */
  defaultEgress?: DefaultEgress;
  /** Warm clones kept of images without an `lmvm:warm-pool` tag (lmvm server --warm-pool; default 0). */
  warmPool?: number;
}

export class ControlPlane {
  readonly managed: ManagedImages;
  readonly images: ImageService;
  readonly connectors: ConnectorService;
  readonly microvms: MicrovmService;
  readonly tags: TagService;
  readonly builds: BuildScheduler;
  readonly policies: LifecyclePolicies;
  readonly quotas: Quotas;
  readonly rates: RateLimiter;
  readonly warmPools: WarmPools;
  private sandboxWatch: NodeJS.Timeout | undefined;

  constructor(readonly opts: ControlPlaneOptions) {
    const { store, clock, scope, host } = opts;
    this.quotas = resolveQuotas(opts.quotas);
    this.rates = new RateLimiter(resolveRateLimits(opts.rateLimits), () => clock.now().getTime());
    this.managed = new ManagedImages(store, clock, scope.region);
    this.connectors = new ConnectorService({ store, clock, scope, ...(opts.resolver ? { resolver: opts.resolver } : {}), ...(opts.log ? { log: opts.log } : {}) });
    this.images = new ImageService({
      store,
      clock,
      scope,
      host,
      managed: this.managed,
      onWork: () => this.builds.kick(),
      connectors: this.connectors,
      quotas: this.quotas,
      ...(opts.builder ? {} : { queuedReason: "Queued: this lmvm server has no image builder installed yet, so the build waits." }),
    });
    this.builds = new BuildScheduler({
      store,
      clock,
      images: this.images,
      concurrency: opts.buildConcurrency ?? 2,
      egressFor: (version) => this.connectors.forBuild(version.config.egressNetworkConnectors),
      ...(opts.builder ? { builder: opts.builder } : {}),
      ...(opts.log ? { log: opts.log } : {}),
    });
    this.microvms = new MicrovmService({
      store,
      clock,
      scope,
      images: this.images,
      tokens: opts.tokens,
      endpointFor: opts.endpointFor,
      runtime: opts.runtime,
      quotas: this.quotas,
      connectors: this.connectors,
      defaultEgress: opts.defaultEgress ?? DEFAULT_EGRESS,
      ...(opts.log ? { log: opts.log } : {}),
      ...(opts.timings ? { timings: opts.timings } : {}),
    });
    this.tags = new TagService(store, scope, this.images);
    this.policies = new LifecyclePolicies(store, clock, this.microvms, opts.log);
    this.warmPools = new WarmPools({ store, runtime: opts.runtime, defaultSize: opts.warmPool ?? 0, defaultEgress: opts.defaultEgress ?? DEFAULT_EGRESS, ...(opts.log ? { log: opts.log } : {}) });
  }

  /** Registers managed images and settles work a previous process left half done. */
  async start(): Promise<void> {
    await this.managed.register();
    await this.connectors.recover();
    await this.builds.recover();
    await this.microvms.recover();
    this.builds.kick();
    this.policies.start();
    // After recovery: its reap must find no clones of this process to take for orphans.
    this.warmPools.start();
    this.sandboxWatch = setInterval(() => void this.microvms.checkSandboxes().catch((err: Error) => this.opts.log?.({ msg: "sandbox check failed", err: err.message })), SANDBOX_CHECK_MS);
    this.sandboxWatch.unref();
  }

  async stop(): Promise<void> {
    if (this.sandboxWatch) clearInterval(this.sandboxWatch);
    await this.policies.stop();
    await this.builds.stop();
    await this.connectors.settle();
    await this.warmPools.stop();
  }

  /**
   * Counts one API request of `operation` against the account's request rate;
   * throws Throttled past it. The API calls it for every request once signed,
   * before anything else; the endpoint proxy's auto-resume is no API request.
   */
  admit(operation: OperationName | ConnectorOperationName): void {
    this.rates.admit(this.opts.scope.accountId, operation);
  }

  // Images
  createMicrovmImage(input: Input<"CreateMicrovmImage">) { return this.images.create(input); }
  updateMicrovmImage(input: Input<"UpdateMicrovmImage">) { return this.images.update(input); }
  getMicrovmImage(input: Input<"GetMicrovmImage">) { return this.images.get(input.imageIdentifier); }
  listMicrovmImages(input: Input<"ListMicrovmImages">, page: PageRequest) { return this.images.list(input.nameFilter, page); }
  deleteMicrovmImage(input: Input<"DeleteMicrovmImage">) { return this.images.delete(input.imageIdentifier); }

  // Versions and builds
  listMicrovmImageVersions(input: Input<"ListMicrovmImageVersions">, page: PageRequest) { return this.images.listVersions(input.imageIdentifier, page); }
  getMicrovmImageVersion(input: Input<"GetMicrovmImageVersion">) { return this.images.getVersion(input.imageIdentifier, input.imageVersion); }
  updateMicrovmImageVersion(input: Input<"UpdateMicrovmImageVersion">) { return this.images.setVersionStatus(input); }
  deleteMicrovmImageVersion(input: Input<"DeleteMicrovmImageVersion">) { return this.images.deleteVersion(input.imageIdentifier, input.imageVersion); }
  listMicrovmImageBuilds(input: Input<"ListMicrovmImageBuilds">, page: PageRequest) { return this.images.listBuilds(input, page); }
  getMicrovmImageBuild(input: Input<"GetMicrovmImageBuild">) { return this.images.getBuild(input.imageIdentifier, input.imageVersion, input.buildId); }

  // Managed images
  listManagedMicrovmImages(_input: Input<"ListManagedMicrovmImages">, page: PageRequest) { return this.managed.list(page); }
  listManagedMicrovmImageVersions(input: Input<"ListManagedMicrovmImageVersions">, page: PageRequest) { return this.managed.versions(input.imageIdentifier, page); }

  // MicroVMs
  runMicrovm(input: Input<"RunMicrovm">) { return this.microvms.run(input); }
  getMicrovm(input: Input<"GetMicrovm">) { return this.microvms.get(input.microvmIdentifier); }
  listMicrovms(input: Input<"ListMicrovms">, page: PageRequest) { return this.microvms.list(input, page); }
  suspendMicrovm(input: Input<"SuspendMicrovm">) { return this.microvms.suspend(input.microvmIdentifier); }
  resumeMicrovm(input: Input<"ResumeMicrovm">) { return this.microvms.resume(input.microvmIdentifier); }
  terminateMicrovm(input: Input<"TerminateMicrovm">) { return this.microvms.terminate(input.microvmIdentifier); }
  createMicrovmAuthToken(input: Input<"CreateMicrovmAuthToken">) { return this.microvms.createAuthToken(input); }
  createMicrovmShellAuthToken(input: Input<"CreateMicrovmShellAuthToken">) { return this.microvms.createShellAuthToken(input); }

  // Tags
  async tagResource(input: Input<"TagResource">) { await this.tags.tag(input.Resource, input.Tags); void this.warmPools.refresh(); }
  async untagResource(input: Input<"UntagResource">) { await this.tags.untag(input.Resource, input.TagKeys); void this.warmPools.refresh(); }
  listTags(input: Input<"ListTags">) { return this.tags.list(input.Resource); }
}
