// Tags on MicroVM images, addressed by ARN as TagResource, UntagResource and
// ListTags do. Managed images belong to the platform and take no tags.

import { parseArn, type Scope } from "./arn.js";
import { InvalidInput, QuotaExceeded } from "./errors.js";
import type { ImageService } from "./images.js";
import type { Store } from "./ports.js";
import { checkWarmPoolTags } from "./warm-pools.js";

const MAX_TAGS = 50;

export class TagService {
  constructor(
    private readonly store: Store,
    private readonly scope: Scope,
    private readonly images: ImageService,
  ) {}

  private async taggable(resource: string, tx: Store): Promise<string> {
    const arn = parseArn(resource);
    if (!arn) throw new InvalidInput(`'Resource' must be an ARN such as arn:aws:lambda:${this.scope.region}:${this.scope.accountId}:microvm-image:my-image; got '${resource}'.`);
    if (arn.account === "aws") throw new InvalidInput(`${resource} is a managed image; managed images cannot be tagged.`);
    if (arn.resourceType !== "microvm-image") {
      throw new InvalidInput(`Only MicroVM images can be tagged; '${resource}' is a ${arn.resourceType}.`);
    }
    return (await this.images.resolve(resource, tx)).arn;
  }

  list(resource: string): Promise<Record<string, string>> {
    return this.store.transaction(async (tx) => tx.getTags(await this.taggable(resource, tx)));
  }

  tag(resource: string, tags: Record<string, string>): Promise<void> {
    return this.store.transaction(async (tx) => {
      checkWarmPoolTags(tags);
      const arn = await this.taggable(resource, tx);
      const merged = { ...(await tx.getTags(arn)), ...tags };
      if (Object.keys(merged).length > MAX_TAGS) {
        throw new QuotaExceeded("MicrovmImage", `${arn} would have ${Object.keys(merged).length} tags; a resource can have at most ${MAX_TAGS}. Remove some with untag-resource first.`);
      }
      await tx.putTags(arn, tags);
    });
  }

  untag(resource: string, keys: string[]): Promise<void> {
    return this.store.transaction(async (tx) => tx.removeTags(await this.taggable(resource, tx), keys));
  }
}
