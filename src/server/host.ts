// The machine's CPU, as builds report it: architecture (X86_64, ARM_64),
// chipset vendor and generation, read from the kernel rather than assumed.

import { readFileSync } from "node:fs";
import { arch } from "node:os";
import type { HostPlatform } from "../core/index.js";

export function hostPlatform(): HostPlatform {
  const architecture = arch() === "arm64" ? "ARM_64" : arch() === "x64" ? "X86_64" : arch().toUpperCase();
  let cpuinfo = "";
  try {
    cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    // Not Linux: vendor unknown.
  }
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.+)$`, "m").exec(cpuinfo)?.[1]?.trim();
  const vendor = field("vendor_id") ?? field("CPU implementer") ?? "UNKNOWN";
  const chipset = ({ GenuineIntel: "INTEL", AuthenticAMD: "AMD", "0x41": "ARM", "0x61": "APPLE" } as Record<string, string>)[vendor] ?? vendor.toUpperCase();
  const family = field("cpu family") ?? field("CPU architecture");
  const model = field("model") ?? field("CPU part");
  const chipsetGeneration = family && model ? `family-${family}-model-${model}` : "unknown";
  return { architecture, chipset, chipsetGeneration };
}
