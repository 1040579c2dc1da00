// Run by `npm run build` after tsc: writes the botocore models of
// ./models.ts MODEL_SOURCES into dist/aws-models/<service>/<apiVersion>/.

import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

// lmvm pins its SDK version, so the SDK's warning about future Node versions is noise here (as in bin/lmvm).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
const { generateBotocoreModel } = await import("./generate.js");
const { MODEL_SOURCES, shippedModelsDir } = await import("./models.js");

const root = shippedModelsDir();
rmSync(root, { recursive: true, force: true });
for (const source of MODEL_SOURCES) {
  const model = await generateBotocoreModel(source.package, source.service);
  const dir = join(root, model.service, model.apiVersion);
  mkdirSync(dir, { recursive: true });
  for (const [file, content] of Object.entries(model.files)) writeFileSync(join(dir, file), `${JSON.stringify(content, null, 2)}\n`);
  process.stdout.write(`aws-models: ${model.service} ${model.apiVersion} (${model.operations.length} operations, ${Object.keys(model.files).join(", ")}) from ${source.package}\n`);
}
