// Wire constants that clients (the CLI) share with the control API. A leaf:
// it imports nothing, so a client reading it loads no server code.

/** lmvm's own routes, outside the SDK's model, live under this prefix. */
export const LMVM_PREFIX = "/lmvm/2025-09-09";

/** Query parameters of the log routes: follow the log as it grows, from this byte on. */
export const LOG_FOLLOW_PARAM = "follow";
export const LOG_OFFSET_PARAM = "offset";

/** The Lambda Core network-connector API's collection path (https://docs.aws.amazon.com/lambda/latest/lambda-core/API_CreateNetworkConnector.html). */
export const CONNECTORS_PATH = "/2026-04-04/network-connectors";
