// What a build needs to know from a Dockerfile before buildah reads it: the
// images its FROM lines name, so managed base images can be made and other
// images pulled while the host's network is still at hand.

export interface FromImage {
  /** As written after substituting ARGs declared before the first FROM. */
  ref: string;
  /** Set when the reference names a managed image: lmvm/<name>[:<version>]. */
  managed?: { name: string; version?: string };
}

export function fromImages(dockerfile: string): FromImage[] {
  const lines = dockerfile.replace(/\\\r?\n/g, " ").split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const args = new Map<string, string>();
  const stages = new Set<string>();
  const images: FromImage[] = [];
  let seenFrom = false;
  for (const line of lines) {
    const [instruction = "", ...rest] = line.split(/\s+/);
    const op = instruction.toUpperCase();
    if (op === "ARG" && !seenFrom) {
      for (const decl of rest) {
        const [k, v] = decl.split("=", 2);
        if (k) args.set(k, (v ?? "").replace(/^["']|["']$/g, ""));
      }
    } else if (op === "FROM") {
      seenFrom = true;
      const words = rest.filter((w) => !w.startsWith("--"));
      const raw = words[0];
      if (!raw) continue;
      const ref = raw.replace(/\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)/g, (_m, a, dflt, b) => args.get(a ?? b) || dflt || "");
      if (words[1]?.toUpperCase() === "AS" && words[2]) stages.add(words[2].toLowerCase());
      if (ref.toLowerCase() === "scratch" || stages.has(ref.toLowerCase()) && words[1]?.toUpperCase() !== "AS") continue;
      if (images.some((i) => i.ref === ref)) continue;
      const m = /^(?:localhost\/)?lmvm\/([a-z0-9]+)(?::([A-Za-z0-9._-]+))?$/.exec(ref);
      images.push(m ? { ref, managed: { name: m[1]!, ...(m[2] && m[2] !== "latest" ? { version: m[2] } : {}) } } : { ref });
    }
  }
  return images;
}
