// The processes below one process, read from /proc: to stop what a tool
// started (a build's RUN step) while letting the tool itself clean up.

import { readdirSync, readFileSync } from "node:fs";

function parentOf(pid: string): number | undefined {
  try {
    // The command name (field 2) is in parentheses and may hold spaces; the parent pid follows it.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined; // gone meanwhile
  }
}

/** Every process descended from `pid`, nearest first. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const parent = parentOf(entry);
    if (parent !== undefined) children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
  }
  const found: number[] = [];
  for (let queue = [...(children.get(pid) ?? [])]; queue.length; ) {
    const next = queue.shift()!;
    found.push(next);
    queue.push(...(children.get(next) ?? []));
  }
  return found;
}

/** Sends SIGKILL to every process below `pid`'s children, sparing `pid` and its children themselves. */
export function killGrandchildren(pid: number): number {
  const spared = new Set([pid, ...descendants(pid).filter((p) => parentOf(String(p)) === pid)]);
  let killed = 0;
  for (const p of descendants(pid)) {
    if (spared.has(p)) continue;
    try {
      process.kill(p, "SIGKILL");
      killed++;
    } catch {
      // already gone
    }
  }
  return killed;
}
