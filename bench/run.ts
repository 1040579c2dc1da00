// `npm run bench`: every benchmark, each printing ratios against a baseline
// measured in the same run. Absolute numbers on shared machines are noise.
import { buildsBench } from "./builds.js";
import { cliBench } from "./cli.js";
import { clusterBench } from "./cluster.js";
import { controlPlaneBench } from "./control-plane.js";
import { egressBench } from "./egress.js";
import { idleBench } from "./idle.js";
import { policyBench } from "./policy.js";
import { proxyBench } from "./proxy.js";
import { snapshotsBench } from "./snapshots.js";

const benches: [string, () => Promise<string[]>][] = [
  ["control-plane", controlPlaneBench],
  ["cli", cliBench],
  ["builds", buildsBench],
  ["snapshots", snapshotsBench],
  ["proxy", proxyBench],
  ["egress", egressBench],
  ["policy", policyBench],
  ["idle", idleBench],
  ["cluster", clusterBench],
];
const only = process.argv[2];
for (const [name, bench] of benches) {
  if (only && only !== name) continue;
  for (const line of await bench()) console.log(line);
  console.log();
}
