// What a host that runs sandboxes is made of, composed once for both roles:
// `lmvm server` on one machine (platform.ts) and `lmvm agent` on each host of
// a cluster (src/cluster/agent.ts). The network namespaces, the egress
// gateway with its DNS sockets, the instance-metadata service, MicroVMs' log
// files and, where runsc is installed, the gVisor runtime over them.

import { existsSync } from "node:fs";
import { delimiter, join } from "node:path";
import { builtImageDir, readBuiltImage } from "../builder/index.js";
import { LogFiles } from "../os/index.js";
import { EgressGateway, NetworkNamespaces } from "../net/index.js";
import { MetadataService } from "../metadata/index.js";
import { Gvisor, MicrovmRuntime, PreparedResources, type SandboxPlatform } from "../runtime/index.js";
import type { HostPlatform, RoleCredentialSource } from "../core/index.js";
import { paths } from "./data-paths.js";

export interface SandboxHostConfig {
  dataDir: string;
  sandboxPlatform?: SandboxPlatform;
  microvmDiskMiB?: number;
  dnsResolvers?: string[];
  region: string;
  log: (event: Record<string, unknown>) => void;
  /** The execution roles' credentials the metadata service hands out. */
  credentials: RoleCredentialSource;
  host: HostPlatform;
  /** False: no MicroVM runtime here (a cluster's server, whose MicroVMs run on agents); builds still use the rest. */
  microvms?: boolean;
}

export interface SandboxHost {
  nets: NetworkNamespaces;
  metadata: MetadataService;
  egress: EgressGateway;
  microvmLogs: LogFiles;
  /** The gVisor runtime, or undefined where runsc is not installed. */
  runtime: MicrovmRuntime | undefined;
}

export function onPath(command: string): boolean {
  return (process.env.PATH ?? "").split(delimiter).some((dir) => dir && existsSync(join(dir, command)));
}

export function composeSandboxHost(config: SandboxHostConfig): SandboxHost {
  const files = paths(config.dataDir);
  const microvmLogs = new LogFiles(files.microvmLogs);
  const nets = new NetworkNamespaces(undefined, files.networks);
  // Every sandbox's instance-metadata service: a MicroVM's execution role, a build's build role (src/metadata).
  const metadata = new MetadataService({ credentials: config.credentials, region: config.region, log: config.log });
  const egress = new EgressGateway({ nets, metadata, ...(config.dnsResolvers ? { resolvers: config.dnsResolvers } : {}) });
  const runtime = config.microvms !== false && onPath("runsc")
    ? new MicrovmRuntime({
        gvisor: new Gvisor({ stateRoot: files.runscMicrovms, ...(config.sandboxPlatform ? { platform: config.sandboxPlatform } : {}), ...(config.microvmDiskMiB ? { diskMiB: config.microvmDiskMiB } : {}) }),
        nets,
        egress,
        dataDir: config.dataDir,
        microvmsDir: files.microvms,
        poolDir: files.pool,
        log: config.log,
        logs: microvmLogs,
        prepared: new PreparedResources({ nets, spare: new NetworkNamespaces(undefined, files.preparedNetworks), dir: files.prepared, log: config.log }),
        locate: (imageArn, version) => {
          const built = readBuiltImage(files.images, imageArn, version, config.host.architecture);
          return { ...built, snapshot: join(builtImageDir(files.images, imageArn, version, config.host.architecture), "snapshot") };
        },
      })
    : undefined;
  return { nets, metadata, egress, microvmLogs, runtime };
}
