// Each operation: validated input → core call → output shape. List
// operations return `next`, which the server turns into a signed nextToken.

import type { ControlPlane, Input, OperationName, Page, PageRequest } from "../core/index.js";
import * as view from "./views.js";

export interface ListResult {
  items: unknown[];
  next?: string;
}

function list<T>(page: Page<T>, view: (item: T) => unknown): ListResult {
  return { items: page.items.map(view), ...(page.next ? { next: page.next } : {}) };
}

type Handler<Op extends OperationName> = (cp: ControlPlane, input: Input<Op>, page: PageRequest) => Promise<object | ListResult | undefined>;

export const handlers: { [Op in OperationName]: Handler<Op> } = {
  async CreateMicrovmImage(cp, input) {
    const r = await cp.createMicrovmImage(input);
    return view.imageWithVersion(r.image, r.version, r.tags);
  },
  async UpdateMicrovmImage(cp, input) {
    const r = await cp.updateMicrovmImage(input);
    return view.imageWithVersion(r.image, r.version);
  },
  async GetMicrovmImage(cp, input) {
    const r = await cp.getMicrovmImage(input);
    return view.image(r.image, r.tags);
  },
  async ListMicrovmImages(cp, input, page) {
    return list(await cp.listMicrovmImages(input, page), view.imageSummary);
  },
  async DeleteMicrovmImage(cp, input) {
    const r = await cp.deleteMicrovmImage(input);
    return { imageIdentifier: r.arn, state: r.state };
  },
  async ListMicrovmImageVersions(cp, input, page) {
    const { page: versions, tags } = await cp.listMicrovmImageVersions(input, page);
    return list(versions, (v) => view.version(v, tags));
  },
  async GetMicrovmImageVersion(cp, input) {
    const r = await cp.getMicrovmImageVersion(input);
    return view.version(r.version, r.tags);
  },
  async UpdateMicrovmImageVersion(cp, input) {
    const r = await cp.updateMicrovmImageVersion(input);
    return view.version(r.version, r.tags);
  },
  async DeleteMicrovmImageVersion(cp, input) {
    const r = await cp.deleteMicrovmImageVersion(input);
    return { imageIdentifier: r.imageArn, imageVersion: r.version, state: r.state };
  },
  async ListMicrovmImageBuilds(cp, input, page) {
    return list(await cp.listMicrovmImageBuilds(input, page), view.buildSummary);
  },
  async GetMicrovmImageBuild(cp, input) {
    return view.build(await cp.getMicrovmImageBuild(input));
  },
  async ListManagedMicrovmImages(cp, input, page) {
    return list(await cp.listManagedMicrovmImages(input, page), view.managedImage);
  },
  async ListManagedMicrovmImageVersions(cp, input, page) {
    return list(await cp.listManagedMicrovmImageVersions(input, page), (v) => view.managedImageVersion(cp.managed.arn(v.name), v));
  },
  async RunMicrovm(cp, input) {
    return view.microvm(await cp.runMicrovm(input));
  },
  async GetMicrovm(cp, input) {
    return view.microvm(await cp.getMicrovm(input));
  },
  async ListMicrovms(cp, input, page) {
    return list(await cp.listMicrovms(input, page), view.microvmItem);
  },
  async SuspendMicrovm(cp, input) {
    await cp.suspendMicrovm(input);
    return {};
  },
  async ResumeMicrovm(cp, input) {
    await cp.resumeMicrovm(input);
    return {};
  },
  async TerminateMicrovm(cp, input) {
    await cp.terminateMicrovm(input);
    return {};
  },
  async CreateMicrovmAuthToken(cp, input) {
    return { authToken: await cp.createMicrovmAuthToken(input) };
  },
  async CreateMicrovmShellAuthToken(cp, input) {
    return { authToken: await cp.createMicrovmShellAuthToken(input) };
  },
  async TagResource(cp, input) {
    await cp.tagResource(input);
    return undefined;
  },
  async UntagResource(cp, input) {
    await cp.untagResource(input);
    return undefined;
  },
  async ListTags(cp, input) {
    return { Tags: await cp.listTags(input) };
  },
};

export const LIST_OPERATIONS = new Set<OperationName>([
  "ListMicrovmImages", "ListMicrovmImageVersions", "ListMicrovmImageBuilds", "ListManagedMicrovmImages",
  "ListManagedMicrovmImageVersions", "ListMicrovms",
]);
