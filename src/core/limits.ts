// How big a MicroVM is and what its app may do. An image asks for memory only
// (resources[0].minimumMemoryInMiB); the service has five sizes, and a request
// gets the smallest size whose baseline memory is at least what it asks for
// (https://docs.aws.amazon.com/lambda/latest/dg/microvms-images.html). A size
// is a baseline (what the host reserves for the MicroVM and what the account's
// memory quota counts) and a peak (what the app may burst to: the guest's
// MemTotal and its cgroup limits), plus a disk.
//
// The app's Linux capabilities: a standard set by default, every capability
// with additionalOsCapabilities ["ALL"]. The service does not document its
// standard set; lmvm gives the one Docker and the OCI runtimes give a
// container (root can own files, change uid, bind low ports, but not mount,
// set the hostname or make namespaces).
//
// Every MicroVM of a version gets the limits its snapshot was taken under: a
// restore into less memory than the snapshot fails, and a restored app keeps
// the capabilities it was booted with.

import type { ImageConfig } from "./model.js";

export interface MicrovmSize {
  baselineMemoryMiB: number;
  baselineVcpus: number;
  peakMemoryMiB: number;
  peakVcpus: number;
  diskMiB: number;
  /** Network bandwidth each way, bytes per second (the service's 1 to 16 MB/s). */
  bandwidthBytesPerSecond: number;
  /** Connections open at once (the service's 8 per vCPU at peak), inbound through the endpoint and outbound alike. */
  connections: number;
}

/**
 * The service's sizes, smallest first. Bandwidth is 1/2/4/8/16 MB/s each way
 * for the 0.5/1/2/4/8 GB baselines, and connections 8/16/32/64/128 for 1 to 16
 * vCPUs (https://docs.aws.amazon.com/lambda/latest/dg/microvms-networking.html,
 * https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
 */
export const MICROVM_SIZES: readonly MicrovmSize[] = [
  { baselineMemoryMiB: 512, baselineVcpus: 0.25, peakMemoryMiB: 2048, peakVcpus: 1, diskMiB: 8192, bandwidthBytesPerSecond: 1000000, connections: 8 },
  { baselineMemoryMiB: 1024, baselineVcpus: 0.5, peakMemoryMiB: 4096, peakVcpus: 2, diskMiB: 8192, bandwidthBytesPerSecond: 2000000, connections: 16 },
  { baselineMemoryMiB: 2048, baselineVcpus: 1, peakMemoryMiB: 8192, peakVcpus: 4, diskMiB: 8192, bandwidthBytesPerSecond: 4000000, connections: 32 },
  { baselineMemoryMiB: 4096, baselineVcpus: 2, peakMemoryMiB: 16384, peakVcpus: 8, diskMiB: 16384, bandwidthBytesPerSecond: 8000000, connections: 64 },
  { baselineMemoryMiB: 8192, baselineVcpus: 4, peakMemoryMiB: 32768, peakVcpus: 16, diskMiB: 32768, bandwidthBytesPerSecond: 16000000, connections: 128 },
];

/** The size of an image without resources. */
export const DEFAULT_MEMORY_MIB = 2048;
/** The largest minimumMemoryInMiB an image may ask for: the largest size's baseline. */
export const MAX_MEMORY_MIB = MICROVM_SIZES[MICROVM_SIZES.length - 1]!.baselineMemoryMiB;
export const MAX_VCPUS = MICROVM_SIZES[MICROVM_SIZES.length - 1]!.peakVcpus;

/** The sizes as a sentence, for messages that must say what can be asked for. */
export const SIZES_TEXT = MICROVM_SIZES.map(
  (s) => `${s.baselineMemoryMiB} MiB/${s.baselineVcpus} vCPU (peak ${s.peakMemoryMiB} MiB/${s.peakVcpus} vCPU, ${s.diskMiB / 1024} GiB disk)${s.baselineMemoryMiB === DEFAULT_MEMORY_MIB ? " (the default)" : ""}`,
).join(", ");

/**
 * The capabilities an app gets without additionalOsCapabilities: Docker's and
 * containerd's default set (github.com/moby/moby oci/caps/defaults.go).
 */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
  "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

/** Every capability Linux 6.1 defines (numbers 0 to 40), which ["ALL"] gives. */
export const ALL_CAPABILITIES: readonly string[] = [
  "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
  "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
  "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
  "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
  "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
  "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
  "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
];

export interface SandboxLimits {
  /** Baseline memory: what the account's memory quota counts. */
  memoryMiB: number;
  /** Baseline vCPUs: what the host's CPU room reserves for the MicroVM. */
  vcpus: number;
  /** What the app may burst to: the guest's MemTotal and the sandbox's memory cgroup limit. */
  peakMemoryMiB: number;
  /** What the app may burst to: the sandbox's CPU quota. */
  peakVcpus: number;
  /** The size's disk: what the app may write. */
  diskMiB: number;
  /** The Linux capabilities of the app and of every process exec'd into its sandbox. */
  capabilities: string[];
  /** Network bandwidth each way, bytes per second, shaped on the host (past it, latency rises). */
  bandwidthBytesPerSecond: number;
  /** Outbound connections open at once; past it, new ones wait (their SYNs are held back) rather than fail. */
  connections: number;
}

/** The size a request for `minimumMemoryInMiB` gets: the smallest whose baseline is at least that; undefined above the largest. */
export function sizeFor(minimumMemoryInMiB: number): MicrovmSize | undefined {
  return MICROVM_SIZES.find((s) => s.baselineMemoryMiB >= minimumMemoryInMiB);
}

export function limitsOf(config: Pick<ImageConfig, "resources" | "additionalOsCapabilities">): SandboxLimits {
  // Inputs are validated; a stored request above the largest size (from before sizes) gets the largest.
  const size = sizeFor(config.resources?.[0]?.minimumMemoryInMiB ?? DEFAULT_MEMORY_MIB) ?? MICROVM_SIZES[MICROVM_SIZES.length - 1]!;
  return {
    memoryMiB: size.baselineMemoryMiB,
    vcpus: size.baselineVcpus,
    peakMemoryMiB: size.peakMemoryMiB,
    peakVcpus: size.peakVcpus,
    diskMiB: size.diskMiB,
    bandwidthBytesPerSecond: size.bandwidthBytesPerSecond,
    connections: size.connections,
    capabilities: [...(config.additionalOsCapabilities?.includes("ALL") ? ALL_CAPABILITIES : DEFAULT_CAPABILITIES)],
  };
}

/**
 * Limits recorded before sizes and capabilities (memoryMiB and vcpus only,
 * then the cgroup limit) read as they were enforced: memory and vCPUs as peak
 * too, the server's disk, the standard capabilities.
 */
export function completeLimits(limits: Partial<SandboxLimits> & { memoryMiB: number; vcpus: number }, diskMiB: number): SandboxLimits {
  return {
    peakMemoryMiB: limits.memoryMiB,
    peakVcpus: limits.vcpus,
    diskMiB,
    capabilities: [...DEFAULT_CAPABILITIES],
    // Sizes were introduced with these numbers; a record from before them gets the default size's.
    bandwidthBytesPerSecond: sizeFor(limits.memoryMiB)?.bandwidthBytesPerSecond ?? sizeFor(DEFAULT_MEMORY_MIB)!.bandwidthBytesPerSecond,
    connections: sizeFor(limits.memoryMiB)?.connections ?? sizeFor(DEFAULT_MEMORY_MIB)!.connections,
    ...limits,
  };
}
