// Build times, side by side in one run: making the debian12 base image, a
// cold Dockerfile build on it, and a rebuild where only the app code changed
// (buildah's layer cache keeps the dependency step).

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CreateMicrovmImageCommand, GetMicrovmImageVersionCommand } from "@aws-sdk/client-lambda-microvms";
import { makeZip } from "../test/support/artifacts.js";
import { startTestPlatform, type TestPlatform } from "../test/support/platform.js";

const DOCKERFILE = (seed: string) => `FROM lmvm/debian12
WORKDIR /app
COPY deps.txt .
# Stands for installing dependencies: slow, and cached while deps.txt is unchanged.
RUN python3 -m compileall -q -d /deps /usr/lib/python3.11 > /dev/null && cp -r /usr/lib/python3.11/__pycache__ /app/deps-cache && echo ${seed} > /app/deps-seed
COPY server.js .
CMD ["node", "server.js"]
`;

async function timeBuild(t: TestPlatform, name: string, files: Record<string, string>, seed: string): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "lmvm-bench-artifact-"));
  const file = join(dir, "app.zip");
  writeFileSync(file, makeZip([{ name: "Dockerfile", content: DOCKERFILE(seed) }, ...Object.entries(files).map(([n, content]) => ({ name: n, content }))]));
  const started = performance.now();
  await t.client.send(new CreateMicrovmImageCommand({
    name, baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12",
    buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: `file://${file}` },
  }));
  for (;;) {
    const v = await t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: name, imageVersion: "1.0" }));
    if (v.state === "SUCCESSFUL") break;
    if (v.state === "FAILED") throw new Error(`${name}: ${v.stateReason}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  rmSync(dir, { recursive: true, force: true });
  return (performance.now() - started) / 1000;
}

export async function buildsBench(): Promise<string[]> {
  const cache = mkdtempSync(join(tmpdir(), "lmvm-bench-base-"));
  const t = await startTestPlatform({ builder: undefined, snapshots: false, baseImageCache: cache });
  try {
    const app = (v: string) => ({ "deps.txt": "left-pad@1\n", "server.js": `console.log(${JSON.stringify(v)});\n` });
    const first = await timeBuild(t, "first", app("v1"), "a"); // makes the base image, then builds
    const cold = await timeBuild(t, "cold", { ...app("v1"), "deps.txt": "left-pad@2\n" }, "b"); // base present, no cached layers
    const rebuild = await timeBuild(t, "rebuild", { ...app("v2"), "deps.txt": "left-pad@2\n" }, "b"); // only server.js changed
    const baseImage = first - cold;
    return [
      "Image builds (debian12 base; baseline: a cold build of the same Dockerfile, in the same run):",
      `  debian12 base image creation (mmdebstrap + import), once per host   ${baseImage.toFixed(1)} s   ${(baseImage / cold).toFixed(2)}x the cold build`,
      `  cold build (no cached layers)                                       ${cold.toFixed(1)} s   1.00`,
      `  rebuild with only the app code changed (layer cache)                ${rebuild.toFixed(1)} s   ${(rebuild / cold).toFixed(2)}x the cold build`,
    ];
  } finally {
    await t.stop();
    rmSync(cache, { recursive: true, force: true });
  }
}
