// How big a MicroVM is. An image asks for memory only (resources.minimumMemoryInMiB);
// CPU follows memory as in AWS Lambda, one vCPU per 1,769 MiB, so a bigger
// MicroVM also computes faster. Every MicroVM of a version gets the limits its
// snapshot was taken under: a restore into less memory than the snapshot fails.

import type { ImageConfig } from "./model.js";

export const DEFAULT_MEMORY_MIB = 1024;
export const MAX_MEMORY_MIB = 32_768;
export const MAX_VCPUS = 16;
const MIB_PER_VCPU = 1769;

export interface SandboxLimits {
  memoryMiB: number;
  vcpus: number;
}

export function limitsOf(config: Pick<ImageConfig, "resources">): SandboxLimits {
  const memoryMiB = Math.min(config.resources?.[0]?.minimumMemoryInMiB ?? DEFAULT_MEMORY_MIB, MAX_MEMORY_MIB);
  return { memoryMiB, vcpus: Math.min(MAX_VCPUS, Math.max(1, Math.ceil(memoryMiB / MIB_PER_VCPU))) };
}
