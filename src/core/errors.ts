// Domain errors: what went wrong, in the core's own terms. The API layer maps
// each kind to one AWS error type and HTTP status (src/api/errors.ts); the core
// never names an HTTP status.

export type ResourceType =
  | "MicrovmImage"
  | "MicrovmImageVersion"
  | "MicrovmImageBuild"
  | "ManagedMicrovmImage"
  | "Microvm"
  | "NetworkConnector"
  | "Resource";

export abstract class DomainError extends Error {
  abstract readonly kind: string;
}

/** An input value breaks a documented constraint. The message says what to fix. */
export class InvalidInput extends DomainError {
  readonly kind = "InvalidInput";
}

export class NotFound extends DomainError {
  readonly kind = "NotFound";
  constructor(
    readonly resourceType: ResourceType,
    readonly resourceId: string,
    message?: string,
  ) {
    super(message ?? `${resourceType} '${resourceId}' does not exist.`);
  }
}

/** The resource's current state forbids the request (an illegal transition). */
export class StateConflict extends DomainError {
  readonly kind = "StateConflict";
  constructor(
    readonly resourceType: ResourceType,
    readonly resourceId: string,
    message: string,
  ) {
    super(message);
  }
}

/** The resource already exists, or another operation on it is in progress. */
export class ResourceInUse extends DomainError {
  readonly kind = "ResourceInUse";
}

/** A clientToken was reused with a different request. */
export class IdempotencyMismatch extends DomainError {
  readonly kind = "IdempotencyMismatch";
}

export class AccessDenied extends DomainError {
  readonly kind = "AccessDenied";
}

/**
 * The request's credentials are not accepted: an unknown or deactivated access key, a missing,
 * altered or replayed session token (`invalid`), or an expired session (`expired`). Each API maps it
 * to its own error type (Lambda: UnrecognizedClientException; IAM and STS: InvalidClientTokenId;
 * ExpiredTokenException for `expired`).
 */
export class Unauthenticated extends DomainError {
  readonly kind = "Unauthenticated";
  constructor(
    readonly reason: "invalid" | "expired",
    message: string,
  ) {
    super(message);
  }
}

/** The host cannot place more work right now; retrying later may succeed. */
export class NoCapacity extends DomainError {
  readonly kind = "NoCapacity";
}

/** A request would take the account past a quota; the fields say which (Service Quotas' terms). */
export class QuotaExceeded extends DomainError {
  readonly kind = "QuotaExceeded";
  constructor(
    readonly resourceType: ResourceType,
    message: string,
    readonly quota: { quotaCode?: string; serviceCode?: string; resourceId?: string } = {},
  ) {
    super(message);
  }
}

/** The account sent an operation faster than its request rate allows; retrying after `retryAfterSeconds` may succeed. */
export class Throttled extends DomainError {
  readonly kind = "Throttled";
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
    readonly quota: { quotaCode: string; serviceCode: string },
  ) {
    super(message);
  }
}

/**
 * An IAM or STS refusal in IAM's own vocabulary: `NoSuchEntity`, `EntityAlreadyExists`,
 * `DeleteConflict`, `MalformedPolicyDocument`, `LimitExceeded`, `ValidationError`, and STS's
 * `MalformedPolicyDocument`, `PackedPolicyTooLarge`, `RegionDisabledException`. The IAM and STS
 * routes send `code` as the error's Code.
 */
export class IamFault extends DomainError {
  readonly kind = "IamFault";
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
