// Placement order in cluster mode: a burst of runs between two heartbeats is
// spread by the memory each host was promised since, not sent to the one host
// that looked freest at its last heartbeat.

import assert from "node:assert/strict";
import { test } from "node:test";
import { rankHosts } from "../../src/cluster/remote-runtime.js";

/** Places `n` MicroVMs of `mib` one after another, each on the first host of the ranking, and counts them per host. */
function burst(hosts: { id: string; freeMemoryMiB: number }[], n: number, mib: number): Record<string, number> {
  const promised = new Map<string, number>();
  const count: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const first = rankHosts(hosts, (id) => promised.get(id) ?? 0)[0]!;
    promised.set(first.id, (promised.get(first.id) ?? 0) + mib);
    count[first.id] = (count[first.id] ?? 0) + 1;
  }
  return count;
}

test("hosts with the same free memory share a burst evenly", () => {
  const hosts = ["host-c", "host-a", "host-b"].map((id) => ({ id, freeMemoryMiB: 8192 }));
  assert.deepEqual(burst(hosts, 6, 512), { "host-a": 2, "host-b": 2, "host-c": 2 });
});

test("a host with more free memory takes more, until what it was promised evens it out", () => {
  const hosts = [{ id: "big", freeMemoryMiB: 8192 }, { id: "small", freeMemoryMiB: 6144 }];
  // 2048 MiB more room: the first four go to big, then they alternate.
  assert.deepEqual(burst(hosts, 8, 512), { big: 6, small: 2 });
});

test("without promises the order is by free memory, ties by id, and the input is left as it was", () => {
  const hosts = [{ id: "b", freeMemoryMiB: 100 }, { id: "a", freeMemoryMiB: 100 }, { id: "c", freeMemoryMiB: 300 }];
  assert.deepEqual(rankHosts(hosts, () => 0).map((h) => h.id), ["c", "a", "b"]);
  assert.deepEqual(hosts.map((h) => h.id), ["b", "a", "c"]);
});

test("builds go to the host with the fewest running first, then the most free memory, whatever its room", () => {
  const hosts = [{ id: "a", freeMemoryMiB: 100 }, { id: "b", freeMemoryMiB: 900 }, { id: "c", freeMemoryMiB: 500 }];
  const running = new Map<string, number>();
  const order: string[] = [];
  // Placed one after another, each counted as running on its host before the next is ranked.
  for (let i = 0; i < 4; i++) {
    const first = rankHosts(hosts, () => 0, (id) => running.get(id) ?? 0)[0]!;
    running.set(first.id, (running.get(first.id) ?? 0) + 1);
    order.push(first.id);
  }
  assert.deepEqual(order, ["b", "c", "a", "b"]);
  // A busy host with the most room comes after idle ones; among equally busy ones, room decides.
  assert.deepEqual(rankHosts(hosts, () => 0, (id) => (id === "b" ? 2 : 0)).map((h) => h.id), ["c", "a", "b"]);
  assert.deepEqual(rankHosts(hosts, () => 0).map((h) => h.id), ["b", "c", "a"], "without a count, by room only");
});
