// The shell's wire names, shared by the ingress and its clients (the CLI). A
// leaf module: a client that imports it loads nothing else of the server.
//
// Two protocols share wss://<endpoint>/shell and a shell token:
// - the service's (the default): a text frame {"type":"session_init",
//   "session_id":"<uuid>"} first, then raw terminal bytes in binary frames
//   both ways; a client text frame {"type":"resize","cols":N,"rows":M}
//   resizes the terminal and any other text is typed into the shell; close
//   1000 "shell exited" when the shell ends.
// - lmvm's exec protocol, chosen by offering the subprotocol lmvm.exec.v1:
//   a command (query ?command=…), exit status, stderr apart, signals, eof.

/** Where the shell is on a MicroVM's endpoint. */
export const SHELL_PATH = "/shell";
/** The service's base WebSocket subprotocol; a client offers it with its authentication entry. */
export const BASE_SUBPROTOCOL = "lambda-microvms";
/** Offered (with the base entry) to speak lmvm's exec protocol instead of the service's. */
export const EXEC_SUBPROTOCOL = "lmvm.exec.v1";

/** Exec protocol: the channel byte that starts each binary frame. */
export const STDIN = 0;
export const STDOUT = 1;
export const STDERR = 2;

/** Both protocols: the shell (or command) ended by itself. */
export const CLOSE_SHELL_EXITED = 1000;
export const SHELL_EXITED_REASON = "shell exited";
/** The service's protocol: the MicroVM is being suspended or terminated (or the server stops); RFC 6455's "going away". */
export const CLOSE_GOING_AWAY = 1001;
/** Exec protocol: the same, as lmvm's clients have always been told it. */
export const CLOSE_MICROVM_STOPPING = 4001;
/** Both protocols: the process could not be started inside the MicroVM. */
export const CLOSE_SPAWN_FAILED = 1011;
