// Public face of the control API: the HTTP server, its SigV4 check, and the
// SDK model (operations, flags) the CLI also reads.
export { buildApi, type ApiOptions } from "./server.js";
export { LMVM_PREFIX, LOG_FOLLOW_PARAM, LOG_OFFSET_PARAM, CONNECTORS_PATH } from "./wire.js";
export { SigV4Verifier, MAX_SKEW_MS, accessKeyIdOf, sourceAddress, type Principal, type SignedRequest } from "./sigv4.js";
export { PageTokens } from "./pagination.js";
export { Metrics } from "./metrics.js";
export { OPERATIONS, OPERATION_NAMES, inputSchema, structureMembers, listMember, kindOf, type OperationModel, type MemberModel, type SdkOperationName } from "./sdk-model.js";
export { cloudTrailApi, CLOUDTRAIL_TARGET_PREFIX, type CloudTrailApiOptions } from "./cloudtrail-route.js";
export { iamApi, type IamApiOptions } from "./iam-route.js";
export { stsApi, type StsApiOptions } from "./sts-route.js";
