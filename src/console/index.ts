// The web console's server side: its static files and the code-upload route.
export { registerConsole, DEFAULT_ASSETS_DIR, type ConsoleOptions } from "./routes.js";
export { CONSOLE_PATH, UPLOADS_PATH } from "./wire.js";
