// Public face of the instance-metadata service: IMDSv2 inside every sandbox, serving its role's credentials.
export { MetadataService, MetadataUnavailable, imdsTime, METADATA_REQUESTS_PER_SECOND, METADATA_MAX_CONNECTIONS, METADATA_MAX_TOKENS, METADATA_MAX_TOKEN_TTL_SECONDS, RENEW_BEFORE_MS, CREDENTIALS_DEADLINE_MS, type MetadataSubject, type MetadataServiceOptions } from "./service.js";
