// `--output table` against the AWS CLI itself: each case of
// cli-table-cases.json is drawn by lmvm's renderer and compared with what the
// AWS CLI's own TableFormatter drew for the same data (cli-table-expected.json,
// made by cli-table-reference.py). Then the two places where lmvm departs
// from it on purpose: values with line breaks, and a scalar result.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { renderTable } from "../../src/cli/table.js";

const HERE = join(import.meta.dirname, "..", "..", "..", "test", "unit");
const cases = JSON.parse(readFileSync(join(HERE, "cli-table-cases.json"), "utf8")) as Record<string, { title: string; data: unknown; width?: number }>;
const expected = JSON.parse(readFileSync(join(HERE, "cli-table-expected.json"), "utf8")) as Record<string, string>;

describe("--output table draws what the AWS CLI draws", () => {
  for (const [name, c] of Object.entries(cases)) {
    test(name, () => {
      assert.equal(renderTable(c.data, c.title, c.width ?? 80), expected[name]);
    });
  }

  test("a value with line breaks takes several lines of its cell, and the table stays whole", () => {
    const out = renderTable({ items: [{ name: "a", stateReason: "Build failed:\nRUN step 2 exited with 1" }, { name: "bb", stateReason: "ok" }] }, "ListMicrovmImages");
    assert.equal(out, [
      "----------------------------------------",
      "|           ListMicrovmImages          |",
      "+--------------------------------------+",
      "||                items               ||",
      "|+------+-----------------------------+|",
      "|| name |         stateReason         ||",
      "|+------+-----------------------------+|",
      "||  a   |  Build failed:              ||",
      "||      |  RUN step 2 exited with 1   ||",
      "||  bb  |  ok                         ||",
      "|+------+-----------------------------+|",
      "",
    ].join("\n"));
    const widths = new Set(out.trimEnd().split("\n").map((l) => l.length));
    assert.equal(widths.size, 1, "every line as wide as the others");
  });

  test("a scalar result gets a row under the title", () => {
    assert.equal(renderTable("CREATED", "GetMicrovmImage"), ["-----------------", "|GetMicrovmImage|", "+---------------+", "|  CREATED      |", "+---------------+", ""].join("\n"));
    assert.equal(renderTable(false, "GetMicrovmImage"), "", "the AWS CLI draws nothing for a false or empty result");
  });
});
