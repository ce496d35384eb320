/* SPDX-License-Identifier: MIT */
/* fork_server.c - see fork_server.h.
 *
 * Protocol over a stream socket pair (engine <-> server), one request at a time:
 *   engine: u64 size, then size bytes of input;
 *   server: i32 wait status, i32 -1 if no child could be forked else 0, u64 length,
 *           then that many bytes of the child's stderr.
 * The server exits when the engine closes its end (or dies: PR_SET_PDEATHSIG), and a
 * child when the server dies, so a killed campaign leaves no process behind. */
#define _GNU_SOURCE
#include "fork_server.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* --- coverage counters shared with the children (libFuzzer builds) ------------------ */

/* The linker's bounds of the section of -fsanitize-coverage=inline-8bit-counters;
 * absent (null) in builds without it (AFL++'s instrumentation, the replay driver). */
extern uint8_t __start___sancov_cntrs[] __attribute__((weak, visibility("hidden")));
extern uint8_t __stop___sancov_cntrs[] __attribute__((weak, visibility("hidden")));

typedef struct cov_share_s {
  uint8_t* lo;       /* the counters' pages: [lo, lo + len) */
  size_t len;
  int fd;            /* memfd the children map over those pages */
  uint8_t* view;     /* the engine's (and server's) mapping of that memfd */
  uint8_t* counters; /* the counters within view: count bytes */
  size_t count;
} cov_share_t;

static cov_share_t g_cov = {NULL, 0, -1, NULL, NULL, 0};

/* Copies, clears and sums bytes without instrumented accesses: the pages around the
 * counters hold other globals, whose redzones ASan poisons. */
__attribute__((no_sanitize("address"))) static void raw_copy(uint8_t* dst, const uint8_t* src, size_t n) {
  volatile uint8_t* d = dst;
  const volatile uint8_t* s = src;
  for (size_t i = 0; i < n; i++) d[i] = s[i];
}

__attribute__((no_sanitize("address"))) static void raw_zero(uint8_t* dst, size_t n) {
  volatile uint8_t* d = dst;
  for (size_t i = 0; i < n; i++) d[i] = 0;
}

__attribute__((no_sanitize("address"))) static void raw_add_saturated(uint8_t* dst, const uint8_t* src, size_t n) {
  volatile uint8_t* d = dst;
  const volatile uint8_t* s = src;
  for (size_t i = 0; i < n; i++) {
    unsigned sum = (unsigned)d[i] + s[i];
    if (s[i] != 0) d[i] = (uint8_t)(sum > 255 ? 255 : sum);
  }
}

static void cov_share_init(void) {
  if (__start___sancov_cntrs == NULL || (uintptr_t)__stop___sancov_cntrs <= (uintptr_t)__start___sancov_cntrs) return;
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t lo = (uintptr_t)__start___sancov_cntrs & ~(page - 1);
  uintptr_t hi = ((uintptr_t)__stop___sancov_cntrs + page - 1) & ~(page - 1);
  int fd = memfd_create("hak-fuzz-coverage", MFD_CLOEXEC);
  if (fd < 0) return;
  if (ftruncate(fd, (off_t)(hi - lo)) != 0) {
    close(fd);
    return;
  }
  uint8_t* view = mmap(NULL, hi - lo, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (view == MAP_FAILED) {
    close(fd);
    return;
  }
  g_cov = (cov_share_t){(uint8_t*)lo, hi - lo, fd, view, view + ((uintptr_t)__start___sancov_cntrs - lo),
                        (size_t)(__stop___sancov_cntrs - __start___sancov_cntrs)};
}

/* In the engine before a child starts: a child that fails before its remap must not
 * leave the last one's counts to be added again. */
static void cov_share_clear(void) {
  if (g_cov.view != NULL) raw_zero(g_cov.counters, g_cov.count);
}

/* In a child, before the input: its counter pages become the shared memfd (with the
 * same contents, counters zeroed), so what the input reaches outlives the child. The
 * child is single-threaded: nothing writes those pages between copy and remap. */
static void cov_share_in_child(void) {
  if (g_cov.view == NULL) return;
  raw_copy(g_cov.view, g_cov.lo, g_cov.len);
  cov_share_clear();
  if (mmap(g_cov.lo, g_cov.len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, g_cov.fd, 0) == MAP_FAILED) {
    _exit(125); /* the child's old pages may be gone: nothing sane to run on */
  }
}

/* In the engine after the child ended: its counts join the engine's, which libFuzzer
 * reads when the input returns. */
static void cov_share_collect(void) {
  if (g_cov.view != NULL) raw_add_saturated(__start___sancov_cntrs, g_cov.counters, g_cov.count);
}

/* --- the server ----------------------------------------------------------------------- */

static int g_sock = -1;    /* the engine's end */
static pid_t g_server = -1;

static int write_all(int fd, const void* buf, size_t n) {
  const char* p = buf;
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_all(int fd, void* buf, size_t n) {
  char* p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* The child's stderr, kept from its start; the rest is drained so the child never
 * blocks on a full pipe. */
#define ERR_CAP 16384
static char g_err[ERR_CAP];

static size_t read_stderr(int fd) {
  size_t len = 0;
  for (;;) {
    char sink[4096];
    char* into = len < ERR_CAP ? g_err + len : sink;
    size_t room = len < ERR_CAP ? ERR_CAP - len : sizeof sink;
    ssize_t n = read(fd, into, room);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (len < ERR_CAP) len += (size_t)n;
  }
  return len;
}

static void run_child(hak_fork_server_fn fn, const uint8_t* data, size_t size, int err_fd, pid_t server) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  prctl(PR_SET_NAME, "hak-fork-child");
  if (getppid() != server) _exit(124);
  close(g_sock);
  dup2(err_fd, 2);
  close(err_fd);
  cov_share_in_child();
  fn(data, size);
  _exit(0);
}

/* One request: read the input, fork a child on it, report its status and stderr. */
static int serve_one(int sock, hak_fork_server_fn fn, uint8_t** buf, size_t* cap) {
  uint64_t size;
  if (read_all(sock, &size, sizeof size) != 0) return -1;
  if (size > *cap) {
    uint8_t* grown = realloc(*buf, size);
    if (grown == NULL) return -1;
    *buf = grown;
    *cap = size;
  }
  if (size > 0 && read_all(sock, *buf, size) != 0) return -1;
  int32_t reply[2] = {0, -1};
  uint64_t len = 0;
  int fds[2];
  if (pipe(fds) == 0) {
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      run_child(fn, *buf, size, fds[1], getppid());
    }
    close(fds[1]);
    if (pid > 0) {
      len = read_stderr(fds[0]);
      int status = 0;
      pid_t waited;
      while ((waited = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
      }
      if (waited == pid) reply[0] = status, reply[1] = 0;
    }
    close(fds[0]);
  }
  if (write_all(sock, reply, sizeof reply) != 0 || write_all(sock, &len, sizeof len) != 0) return -1;
  return write_all(sock, g_err, len);
}

static void server_main(int sock, pid_t engine, hak_fork_server_fn fn) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  prctl(PR_SET_NAME, "hak-fork-server"); /* told apart from the engine in ps and perf */
  if (getppid() != engine) _exit(0);
  /* The children's status is needed: a SIGCHLD ignored (as a fuzz engine may leave
   * it) would have the kernel reap them. */
  signal(SIGCHLD, SIG_DFL);
  signal(SIGPIPE, SIG_IGN);
  uint8_t* buf = NULL;
  size_t cap = 0;
  while (serve_one(sock, fn, &buf, &cap) == 0) {
  }
  _exit(0);
}

static void server_stop(void) {
  if (g_sock >= 0) close(g_sock);
  g_sock = -1;
  if (g_server > 0) {
    kill(g_server, SIGKILL);
    while (waitpid(g_server, NULL, 0) < 0 && errno == EINTR) {
    }
  }
  g_server = -1;
}

void hak_fork_server_start(hak_fork_server_fn fn) {
  if (g_server > 0) return;
  if (g_cov.fd < 0) cov_share_init();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  /* waitpid of the server needs SIGCHLD not ignored here, for the fork's duration. */
  struct sigaction dfl = {0}, old;
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGCHLD, &dfl, &old);
  pid_t engine = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    close(sv[0]);
    server_main(sv[1], engine, fn);
  }
  sigaction(SIGCHLD, &old, NULL);
  close(sv[1]);
  if (pid < 0) {
    close(sv[0]);
    return;
  }
  g_sock = sv[0];
  g_server = pid;
}

static int run_once(hak_fork_server_fn fn, const uint8_t* data, size_t size, char* err, size_t cap, int* status);

int hak_fork_server_run(hak_fork_server_fn fn, const uint8_t* data, size_t size, char* err, size_t cap,
                        int* status) {
  /* A server that died (killed by hand, or by the OOM killer) is replaced once. */
  if (run_once(fn, data, size, err, cap, status) == 0) return 0;
  return run_once(fn, data, size, err, cap, status);
}

static int run_once(hak_fork_server_fn fn, const uint8_t* data, size_t size, char* err, size_t cap, int* status) {
  hak_fork_server_start(fn);
  if (g_server <= 0 || cap == 0) return -1;
  uint64_t n = size;
  int32_t reply[2];
  cov_share_clear();
  uint64_t len;
  if (write_all(g_sock, &n, sizeof n) != 0 || write_all(g_sock, data, size) != 0 ||
      read_all(g_sock, reply, sizeof reply) != 0 || read_all(g_sock, &len, sizeof len) != 0 ||
      len > ERR_CAP) {
    server_stop();
    return -1;
  }
  size_t kept = len < cap - 1 ? (size_t)len : cap - 1;
  if (read_all(g_sock, err, kept) != 0) {
    server_stop();
    return -1;
  }
  for (uint64_t rest = len - kept; rest > 0;) { /* what does not fit in err */
    char sink[4096];
    size_t part = rest < sizeof sink ? (size_t)rest : sizeof sink;
    if (read_all(g_sock, sink, part) != 0) {
      server_stop();
      return -1;
    }
    rest -= part;
  }
  err[kept] = '\0';
  if (reply[1] != 0) return -1;
  cov_share_collect();
  *status = reply[0];
  return 0;
}

pid_t hak_fork_server_pid(void) {
  return g_server;
}
