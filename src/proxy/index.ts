// Public face of the endpoint proxy: the TLS listener, its certificates and the auth tokens it accepts.
export { MicrovmTokens, portAllowed, type VerifiedToken } from "./tokens.js";
export { EndpointProxy, type EndpointProxyOptions, type ProxyMetrics, type ShellIngress as ShellUpgrades } from "./endpoint-proxy.js";
export { ensureCertificates, tlsPaths, type TlsFiles } from "./certificates.js";
export { AUTH_HEADER, PORT_HEADER, FORCE_H2_HEADER, BASE_SUBPROTOCOL, AUTH_SUBPROTOCOL, PORT_SUBPROTOCOL, DEFAULT_APP_PORT, microvmFromHost } from "./routing.js";
export { AWS_ENDPOINT_LIMITS, NO_ENDPOINT_LIMITS, microvmLimits, parseEndpointLimits, type EndpointLimitsConfig } from "./limits.js";
export { PORT_DENIED } from "./admission.js";
export type { MicrovmDirectory } from "./admission.js";
