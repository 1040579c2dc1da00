import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { PageTokens } from "../../src/api/index.js";
import { InvalidInput } from "../../src/core/index.js";

const tokens = new PageTokens(randomBytes(32));
const ctx = PageTokens.context("ListMicrovmImages", { nameFilter: "a", maxResults: 3, nextToken: "x" });

test("a token decodes to its position in the context that made it", () => {
  assert.equal(tokens.decode(ctx, tokens.encode(ctx, "42")), "42");
});

test("paging fields do not change a request's context; filters do", () => {
  assert.equal(ctx, PageTokens.context("ListMicrovmImages", { nameFilter: "a" }));
  assert.notEqual(ctx, PageTokens.context("ListMicrovmImages", { nameFilter: "b" }));
  assert.notEqual(ctx, PageTokens.context("ListMicrovms", { nameFilter: "a" }));
});

test("tokens from another key, another context, or edited by hand are refused", () => {
  const token = tokens.encode(ctx, "42");
  const other = new PageTokens(randomBytes(32)).encode(ctx, "42");
  const [payload, mac] = token.split(".");
  const edited = `${Buffer.from(JSON.stringify({ c: ctx, p: "1" })).toString("base64url")}.${mac}`;
  for (const bad of [other, edited, `${payload}.`, "", "..", `${payload}.${mac}x`]) {
    assert.throws(() => tokens.decode(ctx, bad), InvalidInput, bad);
  }
  assert.throws(() => tokens.decode(PageTokens.context("ListMicrovms", {}), token), InvalidInput);
});
