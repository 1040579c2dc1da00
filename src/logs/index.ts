export { LogCatalog, type LogLookup, type LogStats } from "./catalog.js";
export { compilePattern, BadPattern } from "./filter-pattern.js";
export { buildSource, DEFAULT_GROUP_PREFIX, microvmSource, type LogSource } from "./naming.js";
export { CloudWatchLogsService, LogsError, LOGS_OPERATIONS } from "./service.js";
