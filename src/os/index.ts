// Public face of host-process helpers: running tools such as ip, runsc and
// buildah with captured output, abort, and death together with the server.
export { exec, run, runWithin, inBackground, processAlive, ExecError, type ExecOptions, type ExecResult } from "./exec.js";
export { boundFile, LogFiles, LogWriter, MAX_LOG_BYTES, readLines, readStamps, stampFile, stampsFile, type LogLine, type Stamps } from "./log-files.js";
export { diskUsage, formatScratchDisk, mountScratchDisk, mountsUnder, removeTree, unmountUnder } from "./mounts.js";
export { withFileLock, writeFileAtomic } from "./files.js";
export { killGrandchildren } from "./process-tree.js";
