/*
 * lmvm-init: PID 1 of every lmvm sandbox (the build's snapshot boot, and so
 * every MicroVM restored from it).
 *
 *   lmvm-init <relay-port> <hooks-port> <command> [args...]
 *
 * It does two jobs, in one process, with one poll loop:
 *
 * 1. An init, like tini or `docker run --init`: it starts <command> as its
 *    only child, with its own environment, working directory and user (it
 *    changes none of them), forwards the signals an init receives to it,
 *    reaps every zombie that is reparented to it, and exits with the
 *    command's status (128+N when signal N killed it) as soon as the command
 *    ends. The command is not PID 1, so a signal it has no handler for has
 *    its default effect, as under `docker run --init`.
 *
 * 2. The hook relay: it listens on 0.0.0.0:<relay-port> and relays each TCP
 *    connection, byte for byte, to 127.0.0.1:<hooks-port>. lmvm's hook client
 *    connects to the sandbox's address on <relay-port>, so lifecycle hook
 *    calls reach the app from 127.0.0.1, as they do on AWS Lambda MicroVMs.
 *    The listener is made before the command starts, so it is in the build's
 *    snapshot; bound to 0.0.0.0 it keeps working when the snapshot is
 *    restored at another address. <hooks-port> 0 means no relay.
 *
 * Bounds: at most MAX_CONNS relayed connections at once (further ones wait in
 * the listen backlog), one BUF_SIZE buffer per direction, and a connection
 * idle for IDLE_SECONDS is dropped. A relayed connection ends with a reset on
 * both sides: gVisor will not checkpoint a sandbox holding a TCP endpoint that
 * is still closing (TIME_WAIT included), and lmvm's hook client ends its own
 * side with a reset for the same reason. The relay sends a FIN only to pass on
 * a half-close from the other side, which lmvm's hook client never makes.
 *
 * 3. `lmvm-init --sockets` (run by lmvm inside a sandbox before a checkpoint,
 *    not as PID 1) reads /proc/net and exits with a bit set for each kind of
 *    socket a checkpoint must wait for: 1, a TCP socket in any state but
 *    LISTEN; 2, a UDP socket on the sandbox's own address (not a wildcard or
 *    loopback one), which cannot be restored at another address. 100 when
 *    /proc/net/tcp or /proc/net/udp cannot be read. lmvm runs it on the
 *    sandbox's control socket, which passes no standard streams, so the exit
 *    status is the whole answer.
 *
 * Static (gcc -static) so it runs in any image, whatever its libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 32
#define BUF_SIZE 16384
/* Longer than the longest hook timeout (3600 s for ready and validate). */
#define IDLE_SECONDS 3660

static const int FORWARDED[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGALRM, SIGTSTP, SIGTTIN, SIGTTOU};
#define NFORWARDED (sizeof FORWARDED / sizeof FORWARDED[0])

static volatile sig_atomic_t pending[NSIG];

static void note(int sig) { pending[sig] = 1; }

struct half {
  char buf[BUF_SIZE];
  size_t len, off;
  int eof;      /* the reading side sent its FIN */
  int shut;     /* the FIN was passed on */
};

struct conn {
  int used;
  int client;   /* from the host, through the relay port */
  int app;      /* to 127.0.0.1:<hooks-port> */
  int connecting;
  struct half up;    /* client -> app */
  struct half down;  /* app -> client */
  time_t last;
};

static struct conn conns[MAX_CONNS];
static int nconns;

static time_t now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec;
}

static void say(const char *what) {
  char line[256];
  int n = snprintf(line, sizeof line, "lmvm-init: %s: %s\n", what, strerror(errno));
  if (n > 0) (void)!write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Closes with a reset: no FIN, so nothing is left closing in the sandbox. */
static void reset_close(int fd) {
  struct linger l = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(fd);
}

static void drop(struct conn *c) {
  reset_close(c->client);
  reset_close(c->app);
  c->used = 0;
  nconns--;
}

static int nonblocking_socket(void) {
  return socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

static int listen_on(int port) {
  int fd = nonblocking_socket();
  if (fd < 0) return say("hook relay: socket"), -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) return say("hook relay: bind"), close(fd), -1;
  if (listen(fd, 64) < 0) return say("hook relay: listen"), close(fd), -1;
  return fd;
}

static void accept_one(int listener, int hooks_port) {
  int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (client < 0) return;
  int app = nonblocking_socket();
  if (app < 0) return reset_close(client);
  int one = 1;
  setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(app, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)hooks_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int r = connect(app, (struct sockaddr *)&a, sizeof a);
  if (r < 0 && errno != EINPROGRESS) {
    /* Nothing listens on the hooks port yet: the caller sees a reset and may retry. */
    reset_close(app);
    return reset_close(client);
  }
  for (int i = 0; i < MAX_CONNS; i++) {
    if (conns[i].used) continue;
    struct conn *c = &conns[i];
    memset(c, 0, sizeof *c);
    c->used = 1;
    c->client = client;
    c->app = app;
    c->connecting = r < 0;
    c->last = now();
    nconns++;
    return;
  }
  reset_close(app);
  reset_close(client);
}

/* Reads from `from` into h when h is empty. Returns -1 when the connection must go. */
static int pull(int from, struct half *h) {
  if (h->eof || h->len) return 0;
  ssize_t n = read(from, h->buf, sizeof h->buf);
  if (n > 0) h->len = (size_t)n, h->off = 0;
  else if (n == 0) h->eof = 1;
  else if (errno != EAGAIN && errno != EINTR) return -1;
  return 0;
}

/* Writes what h holds to `to`, and passes a FIN on once h is drained. */
static int push(int to, struct half *h) {
  while (h->len) {
    ssize_t n = send(to, h->buf + h->off, h->len, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    h->off += (size_t)n;
    h->len -= (size_t)n;
  }
  if (h->eof && !h->shut) {
    shutdown(to, SHUT_WR);
    h->shut = 1;
  }
  return 0;
}

static int exit_status(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return 1;
}

/* Whether a /proc/net address (hex, as the kernel prints it) is one of the sandbox's own: not a wildcard, not loopback. */
static int own_address(const char *hex, size_t len) {
  size_t zeros = 0;
  while (zeros < len && hex[zeros] == '0') zeros++;
  if (zeros == len) return 0; /* 0.0.0.0 or :: */
  if (len == 32 && strncmp(hex, "00000000000000000000000001000000", 32) == 0) return 0; /* ::1 */
  /* IPv4 (8 digits, in memory order: the first octet is the first byte) or IPv4-mapped IPv6 (its last 8). */
  const char *v4 = len == 8 ? hex : (len == 32 && strncasecmp(hex, "0000000000000000FFFF0000", 24) == 0 ? hex + 24 : NULL);
  if (v4 && strncasecmp(v4, "7F", 2) == 0) return 0; /* 127.0.0.0/8 */
  return 1;
}

/*
 * Reads one /proc/net table; returns -1 when it cannot be read, else whether a
 * line matches: for tcp, a state (column 4) other than LISTEN (0A); for udp, a
 * local address (column 2) of the sandbox's own.
 */
static int scan(const char *path, int udp) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[512];
  int found = 0;
  if (!fgets(line, sizeof line, f)) { /* the header */
    fclose(f);
    return 0;
  }
  while (!found && fgets(line, sizeof line, f)) {
    char local[64], remote[64], state[8];
    if (sscanf(line, " %*[0-9]: %63s %63s %7s", local, remote, state) != 3) continue;
    if (udp) {
      char *colon = strchr(local, ':');
      found = colon && own_address(local, (size_t)(colon - local));
    } else {
      found = strcasecmp(state, "0A") != 0;
    }
  }
  fclose(f);
  return found;
}

static int sockets(void) {
  int tcp = scan("/proc/net/tcp", 0), tcp6 = scan("/proc/net/tcp6", 0);
  int udp = scan("/proc/net/udp", 1), udp6 = scan("/proc/net/udp6", 1);
  if (tcp < 0 || udp < 0) return 100;
  return (tcp > 0 || tcp6 > 0 ? 1 : 0) | (udp > 0 || udp6 > 0 ? 2 : 0);
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--sockets") == 0) return sockets();
  if (argc < 4) {
    fprintf(stderr, "usage: lmvm-init <relay-port> <hooks-port> <command> [args...]\n");
    return 2;
  }
  int relay_port = atoi(argv[1]);
  int hooks_port = atoi(argv[2]);

  /* Signals are taken only inside ppoll, so a flag set by a handler is never missed. */
  sigset_t all, none, original;
  sigemptyset(&all);
  sigemptyset(&none);
  for (size_t i = 0; i < NFORWARDED; i++) sigaddset(&all, FORWARDED[i]);
  sigaddset(&all, SIGCHLD);
  sigprocmask(SIG_BLOCK, &all, &original);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = note;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < NFORWARDED; i++) sigaction(FORWARDED[i], &sa, NULL);
  sa.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);

  int listener = relay_port > 0 && hooks_port > 0 ? listen_on(relay_port) : -1;

  pid_t child = fork();
  if (child < 0) {
    say("fork");
    return 1;
  }
  if (child == 0) {
    /* The command gets the signal state lmvm-init was given. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (size_t i = 0; i < NFORWARDED; i++) sigaction(FORWARDED[i], &dfl, NULL);
    sigaction(SIGCHLD, &dfl, NULL);
    sigprocmask(SIG_SETMASK, &original, NULL);
    execvp(argv[3], argv + 3);
    int err = errno;
    fprintf(stderr, "lmvm-init: cannot run %s: %s\n", argv[3], strerror(err));
    _exit(err == ENOENT ? 127 : 126);
  }

  struct pollfd fds[1 + 2 * MAX_CONNS];
  struct conn *owner[1 + 2 * MAX_CONNS];
  for (;;) {
    for (size_t i = 0; i < NFORWARDED; i++) {
      int sig = FORWARDED[i];
      if (!pending[sig]) continue;
      pending[sig] = 0;
      kill(child, sig);
    }
    if (pending[SIGCHLD]) {
      pending[SIGCHLD] = 0;
      int st;
      pid_t pid;
      while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
        if (pid == child) return exit_status(st);
    }

    int n = 0;
    if (listener >= 0) {
      fds[n] = (struct pollfd){.fd = listener, .events = nconns < MAX_CONNS ? POLLIN : 0};
      owner[n++] = NULL;
    }
    time_t t = now();
    for (int i = 0; i < MAX_CONNS; i++) {
      struct conn *c = &conns[i];
      if (!c->used) continue;
      if (t - c->last > IDLE_SECONDS) {
        drop(c);
        continue;
      }
      short ce = 0, ae = 0;
      if (c->connecting) ae = POLLOUT;
      else {
        if (!c->up.eof && !c->up.len) ce |= POLLIN;
        if (c->down.len) ce |= POLLOUT;
        if (!c->down.eof && !c->down.len) ae |= POLLIN;
        if (c->up.len) ae |= POLLOUT;
      }
      /* A socket with nothing wanted of it now is left out: poll would report its hang-up at every turn. */
      fds[n] = (struct pollfd){.fd = ce ? c->client : -1, .events = ce};
      owner[n++] = c;
      fds[n] = (struct pollfd){.fd = ae ? c->app : -1, .events = ae};
      owner[n++] = c;
    }

    struct timespec wait = {60, 0};
    int r = ppoll(fds, (nfds_t)n, &wait, &none);
    if (r <= 0) continue; /* a signal (EINTR), or time to look at idle connections */

    if (listener >= 0 && fds[0].revents & POLLIN) accept_one(listener, hooks_port);
    for (int i = listener >= 0 ? 1 : 0; i < n; i += 2) {
      struct conn *c = owner[i];
      short cr = fds[i].revents, ar = fds[i + 1].revents;
      if (!c->used || !(cr | ar)) continue;
      c->last = now();
      if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->app, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
          drop(c);
          continue;
        }
        c->connecting = 0;
        continue;
      }
      int bad = (cr | ar) & POLLERR ? -1 : 0;
      if (cr & (POLLIN | POLLHUP | POLLERR)) bad |= pull(c->client, &c->up);
      if (ar & (POLLIN | POLLHUP | POLLERR)) bad |= pull(c->app, &c->down);
      bad |= push(c->app, &c->up);
      bad |= push(c->client, &c->down);
      if (bad || (c->up.shut && c->down.shut)) drop(c);
    }
  }
}
