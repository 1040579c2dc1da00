// What a build needs to know from a Dockerfile before buildah reads it: the
// images its FROM lines name, so managed base images can be made and other
// images pulled while the host's network is still at hand.
// The Dockerfile is read by dockerfile-ast, a maintained parser, rather than
// by hand: line continuations follow `# escape=`, heredoc bodies are not
// instructions, and a FROM naming an earlier stage is no image to fetch.

import { DockerfileParser } from "dockerfile-ast";
import { BuildFailure } from "../core/index.js";

export interface FromImage {
  /** As written after substituting ARGs declared before the first FROM. */
  ref: string;
  /** Set when the reference names a managed image: lmvm/<name>[:<version>]. */
  managed?: { name: string; version?: string };
}

/**
 * Substitutes `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alternative}`
 * as the Dockerfile reference defines them for FROM lines. lmvm passes no
 * build arguments, so an ARG without a default is empty unless a default in
 * the reference itself fills it.
 */
function expand(text: string, args: Map<string, string | null>, escape: string, line: number): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === escape && text[i + 1] === "$") {
      out += "$";
      i++;
      continue;
    }
    if (c !== "$") {
      out += c;
      continue;
    }
    const braced = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\}/.exec(text.slice(i));
    const bare = braced ? undefined : /^\$([A-Za-z_][A-Za-z0-9_]*)/.exec(text.slice(i));
    const m = braced ?? bare;
    if (!m) {
      out += c;
      continue;
    }
    const name = m[1]!;
    if (!args.has(name)) {
      throw new BuildFailure(
        `Dockerfile line ${line}: FROM uses $${name}, which no ARG before the first FROM declares. Declare it there with a default (ARG ${name}=<image>).`,
      );
    }
    const value = args.get(name) ?? "";
    const op = braced?.[2];
    const word = braced?.[3] ?? "";
    out += op === ":-" ? value || word : op === ":+" ? (value ? word : "") : value;
    i += m[0].length - 1;
  }
  return out;
}

export function fromImages(dockerfile: string): FromImage[] {
  const parsed = DockerfileParser.parse(dockerfile);
  const escape = parsed.getEscapeCharacter();
  // Only ARGs before the first FROM are in scope for FROM lines.
  const args = new Map<string, string | null>();
  for (const arg of parsed.getInitialARGs()) {
    for (const p of arg.getProperties()) args.set(p.getName(), p.getValue());
  }
  /** Stages defined so far, by lower-cased name. */
  const stages = new Map<string, string>();
  const images: FromImage[] = [];
  for (const from of parsed.getFROMs()) {
    const line = from.getRange().start.line + 1;
    const raw = from.getImage();
    const named = from.getBuildStage();
    if (raw) {
      const ref = expand(raw, args, escape, line);
      if (!ref) {
        const unset = from.getVariables().map((v) => v.getName()).filter((n) => !args.get(n));
        throw new BuildFailure(
          `Dockerfile line ${line}: FROM ${raw} names no image: ${unset.map((n) => `ARG ${n}`).join(", ") || "its ARGs"} ${unset.length > 1 ? "have" : "has"} no default, and lmvm passes no build arguments. ` +
            `Give ${unset.length > 1 ? "them defaults" : "it a default"} before the first FROM (for example ARG ${unset[0] ?? "BASE"}=lmvm/debian12).`,
        );
      }
      // Only stages defined earlier count. Docker matches stage names in any
      // case; buildah 1.28 (Debian 12's) only exactly, and would try to pull.
      const stage = stages.get(ref.toLowerCase());
      if (stage !== undefined && stage !== ref) {
        throw new BuildFailure(`Dockerfile line ${line}: FROM ${ref} names stage '${stage}' in another case; lmvm's builder (buildah) matches stage names exactly. Write FROM ${stage}.`);
      }
      const earlierStage = stage !== undefined;
      if (!earlierStage && ref.toLowerCase() !== "scratch" && !images.some((i) => i.ref === ref)) {
        const m = /^(?:localhost\/)?lmvm\/([a-z0-9]+)(?::([A-Za-z0-9._-]+))?$/.exec(ref);
        images.push(m ? { ref, managed: { name: m[1]!, ...(m[2] && m[2] !== "latest" ? { version: m[2] } : {}) } } : { ref });
      }
    }
    if (named) stages.set(named.toLowerCase(), named);
  }
  return images;
}

/**
 * The Dockerfile with `ARG <names>` after every FROM, so that every RUN step
 * of every stage has the build arguments of those names in its environment
 * (buildah's `--env` reaches a RUN only after a step has been committed, so a
 * stage's first RUN would miss it, and a cached layer would keep another
 * build's values). A RUN's cache key includes the build arguments it sees, and
 * ARG values do not stay in the image's config. buildah shows each as a step
 * of its own.
 */
export function declareArgsInEveryStage(dockerfile: string, names: readonly string[]): string {
  const lines = dockerfile.split("\n");
  const ends = DockerfileParser.parse(dockerfile).getFROMs().map((f) => f.getRange().end.line);
  for (const end of ends.sort((a, b) => b - a)) lines.splice(end + 1, 0, `ARG ${names.join(" ")}`);
  return lines.join("\n");
}
