// Public face of the core: resources, state machines, ports and the ControlPlane.
export * from "./arn.js";
export * from "./errors.js";
export * from "./model.js";
export * from "./app-contract.js";
export * from "./ports.js";
export { NoSandboxes } from "./no-sandboxes.js";
export * from "./states.js";
export * from "./inputs.js";
export { ControlPlane, type ControlPlaneOptions } from "./control-plane.js";
export { MANAGED_IMAGES, type ManagedImageSummary } from "./managed-images.js";
export type { ImageView, ImageVersionView } from "./images.js";
export { requestHash } from "./idempotency.js";
export { MAX_ATTEMPTS } from "./builds.js";
export { limitsOf, completeLimits, sizeFor, MICROVM_SIZES, SIZES_TEXT, DEFAULT_CAPABILITIES, ALL_CAPABILITIES, DEFAULT_MEMORY_MIB, MAX_MEMORY_MIB, MAX_VCPUS, type MicrovmSize, type SandboxLimits } from "./limits.js";
export { LifecyclePolicies, type PolicyAction } from "./policies.js";
export { DEFAULT_QUOTAS, QUOTA_NAMES, parseQuotas, resolveQuotas, type Quotas, type QuotaName } from "./quotas.js";
export { DEFAULT_RATE_LIMITS, DOCUMENTED_RATES, parseRateLimits, resolveRateLimits, RateLimiter, type RateLimits } from "./rate-limits.js";
export { DEFAULT_INGRESS, ingressNames, ingressRefusal, type IngressKind } from "./ingress.js";
