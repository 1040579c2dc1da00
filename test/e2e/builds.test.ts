// Image builds with the real builder: buildah, managed base images made with
// busybox-static and mmdebstrap, artifacts from a real S3-compatible server
// and from file://, and every kind of bad input (hostile archives are in
// test/hostile/artifacts.test.ts).

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CreateMicrovmImageCommand, GetMicrovmImageVersionCommand } from "@aws-sdk/client-lambda-microvms";
import { readBuiltImage } from "../../src/builder/index.js";
import { BASE_IMAGE_CACHE, makeZip, startS3, type S3Server } from "../support/artifacts.js";
import { within } from "../support/deadline.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { BUSYBOX, buildToEnd, ROLE } from "../support/builds.js";
import { lmvm } from "../support/processes.js";
import { paths } from "../../src/server/data-paths.js";

const DEBIAN = "arn:aws:lambda:us-east-1:aws:microvm-image:debian12";
const ARN = (name: string) => `arn:aws:lambda:us-east-1:000000000000:microvm-image:${name}`;

const APP_DOCKERFILE = `ARG BASE=lmvm/busybox
FROM \${BASE} AS build
ARG GREETING=hello
WORKDIR /src
COPY . .
RUN echo "$GREETING from a RUN step" > /src/greeting.txt && ls /src > /src/listing.txt

FROM lmvm/busybox:1
ENV APP_MODE=production
WORKDIR /app
COPY --from=build /src/greeting.txt /src/listing.txt ./
ADD app.sh /app/app.sh
USER 1000
EXPOSE 8080 9000
ENTRYPOINT ["/bin/sh"]
CMD ["/app/app.sh"]
`;

describe("image builds", { timeout: 600_000 }, () => {
  let t: TestPlatform;
  let s3: S3Server;
  let loopbackHits = 0;
  const loopback = createServer((_req, res) => {
    loopbackHits += 1;
    res.end("host service");
  });
  let loopbackPort = 0;
  // An HTTPS artifact server with its own CA-less self-signed certificate, trusted through --artifact-ca-file.
  const certDir = tempDir("lmvm-cert-");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
    "-keyout", join(certDir, "key.pem"), "-out", join(certDir, "cert.pem")], { stdio: "ignore" });
  const httpsFiles = new Map<string, Buffer>();
  const https = createHttpsServer({ key: readFileSync(join(certDir, "key.pem")), cert: readFileSync(join(certDir, "cert.pem")) }, (req, res) => {
    if (req.url === "/private.zip") return void res.writeHead(403).end("forbidden");
    const body = httpsFiles.get(req.url ?? "");
    if (!body) return void res.writeHead(404).end();
    res.writeHead(200, { "content-length": body.length }).end(body);
  });
  let httpsBase = "";

  before(async () => {
    s3 = await startS3();
    await within(10_000, "the HTTPS artifact server to listen", new Promise<void>((r) => https.listen(0, "127.0.0.1", r)));
    httpsBase = `https://127.0.0.1:${(https.address() as { port: number }).port}`;
    t = await startTestPlatform({ builder: undefined, snapshots: false, s3Endpoint: s3.endpoint, s3Credentials: s3.credentials, baseImageCache: BASE_IMAGE_CACHE, artifactCaFile: join(certDir, "cert.pem"), buildLimits: { maxArtifactBytes: 8 << 20, maxUncompressedBytes: 32 << 20, maxFiles: 100 } });
    await within(10_000, "the loopback server to listen", new Promise<void>((r) => loopback.listen(0, "127.0.0.1", r)));
    loopbackPort = (loopback.address() as { port: number }).port;
  });
  after(async () => {
    await t.stop();
    await s3.close();
    loopback.close();
    https.close();
  });

  const build = (name: string, uri: string, baseImageArn = BUSYBOX) => buildToEnd(t.client, name, uri, baseImageArn);

  function fileArtifact(entries: Parameters<typeof makeZip>[0]): string {
    const file = join(tempDir("lmvm-artifact-"), "app.zip");
    writeFileSync(file, makeZip(entries));
    return `file://${file}`;
  }

  const app = [
    { name: "Dockerfile", content: APP_DOCKERFILE },
    { name: "app.sh", content: "#!/bin/sh\ncat /app/greeting.txt\n" },
    { name: "lib/util.txt", content: "a nested file" },
  ];

  function assertClean() {
    assert.deepEqual(existsSync(join(t.dataDir, "builds")) ? readdirSync(join(t.dataDir, "builds")) : [], [], "no build scratch space is left behind");
    const mounts = readFileSync("/proc/mounts", "utf8").split("\n").filter((l) => l.includes(t.dataDir));
    assert.deepEqual(mounts, [], "no mount is left behind");
  }

  test("a file:// artifact builds to a root filesystem holding the app, with its image config", async () => {
    const { version, build: b } = await build("from-file", fileArtifact(app));
    assert.equal(version.state, "SUCCESSFUL", version.stateReason);
    assert.equal(b.buildState, "SUCCESSFUL");
    assert.ok((b.snapshotBuild?.codeInstallSizeInBytes ?? 0) > 1_000_000, "the busybox binary alone is over 1 MB");
    const image = readBuiltImage(paths(t.dataDir).images, ARN("from-file"), "1.0", b.architecture!);
    assert.equal(readFileSync(join(image.rootfs, "app", "greeting.txt"), "utf8"), "hello from a RUN step\n");
    assert.deepEqual(readFileSync(join(image.rootfs, "app", "listing.txt"), "utf8").split("\n").filter((f) => ["Dockerfile", "app.sh", "lib"].includes(f)), ["Dockerfile", "app.sh", "lib"]);
    assert.ok(existsSync(join(image.rootfs, "bin", "busybox")));
    assert.deepEqual(image.config.Entrypoint, ["/bin/sh"]);
    assert.deepEqual(image.config.Cmd, ["/app/app.sh"]);
    assert.equal(image.config.WorkingDir, "/app");
    assert.equal(image.config.User, "1000");
    assert.deepEqual(Object.keys(image.config.ExposedPorts ?? {}).sort(), ["8080/tcp", "9000/tcp"]);
    assert.ok(image.config.Env?.includes("APP_MODE=production"));
    assertClean();
  });

  test("a multi-stage Dockerfile whose later stages name earlier ones builds, with an ARG without a default", async () => {
    const { version, build: b } = await build("multi-stage", fileArtifact([
      {
        name: "Dockerfile",
        content: [
          "ARG BASE",
          "FROM ${BASE:-lmvm/busybox} AS base",
          "RUN echo from-base > /base.txt",
          "FROM base AS test",
          "RUN cat /base.txt > /tested.txt && echo tested >> /tested.txt",
          "FROM base",
          "COPY --from=test /tested.txt /app/tested.txt",
          "",
        ].join("\n"),
      },
    ]));
    assert.equal(version.state, "SUCCESSFUL", version.stateReason);
    const image = readBuiltImage(paths(t.dataDir).images, ARN("multi-stage"), "1.0", b.architecture!);
    assert.equal(readFileSync(join(image.rootfs, "app", "tested.txt"), "utf8"), "from-base\ntested\n");
    assert.equal(readFileSync(join(image.rootfs, "base.txt"), "utf8"), "from-base\n");
    assertClean();
  });

  test("the build log tells each step and is readable with lmvm logs build", async () => {
    const r = await lmvm(["logs", "build", "from-file", "1.0", "--data-dir", t.dataDir, "--endpoint-url", t.platform.url]);
    assert.equal(r.code, 0, r.stderr);
    for (const step of ["Fetching code artifact", "Unpacking", "Building the Dockerfile", "STEP", "Done: root filesystem"]) assert.match(r.stdout, new RegExp(step));
    const followed = await lmvm(["logs", "build", "from-file", "1.0", "--follow", "--data-dir", t.dataDir, "--endpoint-url", t.platform.url]);
    assert.equal(followed.stdout, r.stdout, "following a finished build prints it and ends");
  });

  test("an s3:// artifact from an S3-compatible server builds", async () => {
    const { version } = await build("from-s3", await s3.put("apps/app.zip", makeZip(app)));
    assert.equal(version.state, "SUCCESSFUL", version.stateReason);
  });

  test("an https:// artifact builds, over TLS with the configured CA", async () => {
    httpsFiles.set("/app.zip", makeZip(app));
    const { version } = await build("from-https", `${httpsBase}/app.zip`);
    assert.equal(version.state, "SUCCESSFUL", version.stateReason);
  });

  test("https:// artifacts that are missing or forbidden get their own reasons", async () => {
    assert.match((await build("https-missing", `${httpsBase}/nope.zip`)).build.stateReason!, /does not exist \(HTTP 404\)/);
    assert.match((await build("https-denied", `${httpsBase}/private.zip`)).build.stateReason!, /was denied \(HTTP 403\)/);
  });

  test("a failing RUN step fails the build, naming the step and quoting its output", async () => {
    const { version, build: b } = await build("run-fails", fileArtifact([
      { name: "Dockerfile", content: "FROM lmvm/busybox\nRUN echo preparing && echo 'npm ERR! missing script: build' >&2 && exit 3\n" },
    ]));
    assert.equal(version.state, "FAILED");
    assert.equal(b.buildState, "FAILED");
    assert.match(b.stateReason!, /Dockerfile step 2\/2: RUN echo preparing/);
    assert.match(b.stateReason!, /exit status|exit code|exited/);
    assert.match(b.stateReason!, /npm ERR! missing script: build/);
    assertClean();
  });

  test("RUN steps cannot reach a service on the host's loopback", async () => {
    const { build: b } = await build("no-loopback", fileArtifact([
      { name: "Dockerfile", content: `FROM lmvm/busybox\nRUN wget -T 3 -q -O /reached http://127.0.0.1:${loopbackPort}/\n` },
    ]));
    assert.equal(b.buildState, "FAILED");
    assert.equal(loopbackHits, 0, "the host service saw no request");
  });

  const bad: [string, () => Promise<string>, RegExp][] = [
    ["a missing Dockerfile", async () => fileArtifact([{ name: "app/Dockerfile", content: "FROM lmvm/busybox\n" }]), /no Dockerfile at its root/],
    ["a file that is not a zip", async () => { const f = join(tempDir(), "app.zip"); writeFileSync(f, "just text"); return `file://${f}`; }, /is not a zip archive/],
    ["a file:// artifact that does not exist", async () => "file:///nonexistent/app.zip", /does not exist on the lmvm host/],
    ["a missing S3 object", async () => "s3://artifacts/no/such.zip", /does not exist: bucket 'artifacts' has no object 'no\/such\.zip'/],
    ["a missing S3 bucket", async () => "s3://no-such-bucket/app.zip", /there is no bucket 'no-such-bucket'/],
    ["an unreachable https:// artifact", async () => "https://127.0.0.1:1/app.zip", /could not be fetched/],
    ["an unknown managed image in FROM", async () => fileArtifact([{ name: "Dockerfile", content: "FROM lmvm/alpine\n" }]), /FROM lmvm\/alpine names no managed image/],
    ["an oversized artifact", async () => fileArtifact([{ name: "Dockerfile", content: "FROM lmvm/busybox\n" }, { name: "noise.bin", random: 9 << 20 }]), /limit for a compressed artifact is 8388608/],
  ];
  for (const [what, artifact, reason] of bad) {
    test(`${what} fails the build with a clear reason and leaves nothing behind`, async () => {
      const name = `bad-${what.replace(/[^a-z0-9]+/gi, "-").replace(/-$/, "")}`;
      const { version, build: b } = await build(name, await artifact());
      assert.equal(version.state, "FAILED");
      assert.equal(b.buildState, "FAILED");
      assert.match(b.stateReason!, reason);
      assert.match(version.stateReason!, reason, "the version's reason carries the build's");
      assert.ok(!existsSync(join(t.dataDir, "images", name)), "no half-built image is kept");
      assertClean();
    });
  }

  test("S3 access denied is its own error", async () => {
    const denied = await startTestPlatform({ builder: undefined, snapshots: false, s3Endpoint: s3.endpoint, s3Credentials: { accessKeyId: "NOT-ALLOWED", secretAccessKey: "x" }, baseImageCache: BASE_IMAGE_CACHE });
    try {
      const uri = await s3.put("private/app.zip", makeZip(app));
      await denied.client.send(new CreateMicrovmImageCommand({ name: "denied", baseImageArn: BUSYBOX, buildRoleArn: ROLE, codeArtifact: { uri } }));
      const v = await eventually(async () => {
        const v = await denied.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "denied", imageVersion: "1.0" }));
        return v.state === "FAILED" ? v : undefined;
      }, "denied build");
      assert.match(v.stateReason!, /Access to code artifact s3:\/\/artifacts\/private\/app\.zip was denied \(InvalidAccessKeyId\)/);
    } finally {
      await denied.stop();
    }
  });

  test("the debian12 base image runs the example app's Dockerfile", async () => {
    const dir = join(import.meta.dirname, "..", "..", "..", "examples", "hello");
    const entries = readdirSync(dir).map((name) => ({ name, content: readFileSync(join(dir, name), "utf8") }));
    const { version, build: b } = await build("hello", fileArtifact(entries), DEBIAN);
    assert.equal(version.state, "SUCCESSFUL", version.stateReason);
    const image = readBuiltImage(paths(t.dataDir).images, ARN("hello"), "1.0", b.architecture!);
    assert.ok(existsSync(join(image.rootfs, "usr", "bin", "node")), "nodejs is in debian12");
    assert.ok(existsSync(join(image.rootfs, "usr", "bin", "python3")), "python3 is in debian12");
    assert.ok(existsSync(join(image.rootfs, "etc", "ssl", "certs", "ca-certificates.crt")), "ca-certificates is in debian12");
    assert.match(readFileSync(join(image.rootfs, "app", "server.js"), "utf8"), /createServer/);
    assert.deepEqual(image.config.Cmd, ["node", "server.js"]);
  });
});
