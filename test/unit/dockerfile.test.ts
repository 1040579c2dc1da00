// Which images a Dockerfile's FROM lines make a build fetch: cases the
// hand-written reader got wrong, each read now by dockerfile-ast.

import assert from "node:assert/strict";
import { test } from "node:test";
import { declareArgsInEveryStage, fromImages } from "../../src/builder/index.js";
import { BuildFailure } from "../../src/core/index.js";

const refs = (dockerfile: string) => fromImages(dockerfile).map((i) => i.ref);

test("a later stage that names an earlier one is not an image to pull", () => {
  const images = fromImages("FROM lmvm/busybox AS base\nRUN echo hi\nFROM base AS test\nRUN true\nFROM test\n");
  assert.deepEqual(images, [{ ref: "lmvm/busybox", managed: { name: "busybox" } }]);
});

test("a stage named in another case fails, saying buildah matches stage names exactly", () => {
  assert.throws(() => fromImages("FROM lmvm/busybox AS base\nFROM Base\n"), /line 2: FROM Base names stage 'base' in another case; .* Write FROM base\./);
});

test("a FROM naming a stage defined only later is an image, as in Docker", () => {
  assert.deepEqual(refs("FROM app\nFROM lmvm/busybox AS app\n"), ["app", "lmvm/busybox"]);
});

test("heredoc bodies are not instructions", () => {
  const dockerfile = "FROM lmvm/busybox\nRUN <<EOF\nFROM evil/image\nARG X=1\nEOF\nCOPY <<-EOT /etc/motd\n\tFROM another/image\n\tEOT\nFROM lmvm/debian12:1\n";
  assert.deepEqual(fromImages(dockerfile), [
    { ref: "lmvm/busybox", managed: { name: "busybox" } },
    { ref: "lmvm/debian12:1", managed: { name: "debian12", version: "1" } },
  ]);
});

test("the # escape= directive sets the line continuation character", () => {
  // With a backtick as escape, a trailing backslash is a path, not a continuation.
  const dockerfile = "# escape=`\nFROM lmvm/busybox AS base\nRUN mkdir C:\\\nFROM lmvm/debian12\nFROM `\n  base\n";
  assert.deepEqual(refs(dockerfile), ["lmvm/busybox", "lmvm/debian12"]);
  // Without the directive the backslash continues the line.
  assert.deepEqual(refs("FROM lmvm/busybox \\\n  AS base\nFROM base\n"), ["lmvm/busybox"]);
});

test("an ARG without a default takes the default written in FROM", () => {
  assert.deepEqual(refs("ARG BASE\nARG TAG=1\nFROM ${BASE:-lmvm/busybox}:${TAG}\n"), ["lmvm/busybox:1"]);
  assert.deepEqual(refs("ARG NAME\nFROM lmvm/debian12${NAME:+:unused}\n"), ["lmvm/debian12"]);
});

test("an ARG without a default that leaves FROM empty fails, naming the ARG to give a default", () => {
  assert.throws(() => fromImages("ARG BASE\nFROM $BASE\n"), (err: unknown) => {
    assert.ok(err instanceof BuildFailure);
    assert.match(err.message, /Dockerfile line 2: FROM \$BASE names no image: ARG BASE has no default/);
    assert.match(err.message, /ARG BASE=lmvm\/debian12/);
    return true;
  });
});

test("quoted ARG values, several per line, and ARGs declared after FROM", () => {
  assert.deepEqual(refs(`ARG BASE="lmvm/busybox" V='1'\nFROM \${BASE}:$V AS one\nARG BASE=ignored/here\nFROM $BASE\n`), ["lmvm/busybox:1", "lmvm/busybox"]);
});

test("a variable no ARG declares fails with the line and the fix", () => {
  assert.throws(() => fromImages("FROM lmvm/busybox\nARG LATE=x\nFROM $LATE\n"), /line 3: FROM uses \$LATE, which no ARG before the first FROM declares/);
});

test("flags, scratch and repeated images", () => {
  assert.deepEqual(refs("FROM --platform=linux/amd64 lmvm/busybox AS a\nFROM scratch\nFROM lmvm/busybox\nFROM docker.io/library/alpine:3\n"), ["lmvm/busybox", "docker.io/library/alpine:3"]);
});

test("the reserved variables are declared after every FROM, continued lines and heredocs included", () => {
  const dockerfile = "FROM lmvm/busybox \\\n  AS base\nRUN <<EOF\nFROM not-an-instruction\nEOF\nFROM base\r\nRUN env\n";
  assert.equal(
    declareArgsInEveryStage(dockerfile, ["AWS_REGION", "AWS_LAMBDA_MICROVM_IMAGE_VERSION"]),
    "FROM lmvm/busybox \\\n  AS base\nARG AWS_REGION AWS_LAMBDA_MICROVM_IMAGE_VERSION\nRUN <<EOF\nFROM not-an-instruction\nEOF\nFROM base\r\nARG AWS_REGION AWS_LAMBDA_MICROVM_IMAGE_VERSION\nRUN env\n",
  );
});
