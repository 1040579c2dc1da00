// The processes below one process, read from /proc: to stop what a tool
// started (a build's RUN step) while letting the tool itself clean up.

import { readdirSync, readFileSync } from "node:fs";

/** Every process's children, from each /proc/<pid>/stat's parent pid. */
function childrenByParent(): Map<number, number[]> {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    // The command name (field 2) is in parentheses and may hold spaces; the parent pid follows it.
    const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
  }
  return children;
}

/** Sends SIGKILL to every process below `pid`'s children, sparing `pid` and its children themselves. */
export function killGrandchildren(pid: number): void {
  const children = childrenByParent();
  const queue = (children.get(pid) ?? []).flatMap((child) => children.get(child) ?? []);
  while (queue.length) {
    const next = queue.shift()!;
    queue.push(...(children.get(next) ?? []));
    try {
      process.kill(next, "SIGKILL");
    } catch {
      // already gone
    }
  }
}
