// What the platform and the app inside a MicroVM agree on, as AWS Lambda
// MicroVMs defines it: where lifecycle hooks are served, and the port lmvm's
// in-sandbox hook relay listens on (the relay makes hook calls reach the app
// from 127.0.0.1, as they do on AWS; the endpoint never forwards to it).

/** Every lifecycle hook is `POST <HOOK_PATH_PREFIX><hook>` on the image's hooks port. */
export const HOOK_PATH_PREFIX = "/aws/lambda-microvms/runtime/v1/";

/** The port inside every sandbox where lmvm's hook relay listens. Reserved: the endpoint refuses it. */
export const HOOK_RELAY_PORT = 65_531;
