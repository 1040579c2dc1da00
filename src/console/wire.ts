// Paths the console's browser code shares with its server routes. A leaf: it
// imports nothing, so the browser bundle loads no server code.

/** Where `lmvm server` serves the console. */
export const CONSOLE_PATH = "/console";
/** Under LMVM_PREFIX: PUT a zip (?imageName=), get back a file:// code artifact URI. */
export const UPLOADS_PATH = "/uploads";
