// Public face of the endpoint proxy. Today: the auth tokens it accepts.
export { MicrovmTokens, portAllowed, type VerifiedToken } from "./tokens.js";
