// The host's name resolution for network connectors' host names: what
// getaddrinfo says (/etc/hosts, then the host's DNS resolvers), IPv4 only,
// the same answer any program on this host would get.

import { lookup } from "node:dns/promises";
import { NameNotFound, type NameResolver } from "../core/index.js";

const NOT_FOUND = new Set(["ENOTFOUND", "ENODATA", "EAI_NONAME", "EAI_NODATA"]);

export const hostNameResolver: NameResolver = {
  async resolve4(hostName: string): Promise<string[]> {
    try {
      const answers = await lookup(hostName, { family: 4, all: true });
      if (!answers.length) throw new NameNotFound(`no IPv4 address for ${hostName}`);
      return answers.map((a) => a.address);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code && NOT_FOUND.has(code)) throw new NameNotFound(`no IPv4 address for ${hostName} (${code})`);
      throw err;
    }
  },
};
