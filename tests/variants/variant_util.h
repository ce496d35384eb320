/* SPDX-License-Identifier: MIT */
// variant_util.h - helpers of the variant tests: capturing what a child process writes
// to stderr, reading a file descriptor to the end, waiting for a child with a deadline.
#ifndef HAK_TESTS_VARIANTS_VARIANT_UTIL_H
#define HAK_TESTS_VARIANTS_VARIANT_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char** environ;

#include <string>
#include <vector>

namespace hak_variant_test {

inline std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) out.append(buf, (size_t)n);
    else if (n < 0 && errno == EINTR) continue;
    else break;
  }
  return out;
}

struct ChildResult {
  bool exited = false;  // normal exit (else killed by a signal or hung)
  int code = -1;        // exit code, or the signal number when !exited
  bool hung = false;
  std::string err;      // everything the child wrote to stderr
};

// Forks; the child redirects stderr into a pipe and runs `body` (which must end the
// process itself: exit, _exit, abort...). The parent collects stderr and the status,
// killing the child after `deadline_s` seconds.
template <typename F>
ChildResult RunChild(F body, double deadline_s = 20.0) {
  ChildResult res;
  int fds[2];
  if (pipe(fds) != 0) return res;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return res;
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2);
    close(fds[1]);
    body();
    _exit(99);  // body returned: not expected
  }
  close(fds[1]);
  // EOF on the pipe means the child is gone; a deadline guards against one that hangs.
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    char buf[4096];
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n > 0) {
      res.err.append(buf, (size_t)n);
      continue;
    }
    if (n == 0) break;
    if (errno == EINTR) continue;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 > deadline_s) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      close(fds[0]);
      res.hung = true;
      return res;
    }
    usleep(1000);
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) {
    res.exited = true;
    res.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    res.code = WTERMSIG(status);
  }
  return res;
}

// Runs this test binary again as a child, with the given extra environment entries
// ("NAME=value"; every inherited HAKMEM_* variable is dropped first) and only the named
// test (usually a DISABLED_ helper). Options are read once at process start, so this is
// how a test sets them.
inline ChildResult RunSelfWithEnv(const std::string& test, const std::vector<std::string>& env,
                                  double deadline_s = 60.0) {
  std::vector<std::string> envs;
  for (char** e = environ; *e != nullptr; e++) {
    if (strncmp(*e, "HAKMEM_", 7) != 0) envs.push_back(*e);
  }
  envs.insert(envs.end(), env.begin(), env.end());
  std::string filter = "--gtest_filter=" + test;
  return RunChild(
      [&] {
        std::vector<char*> envp;
        for (std::string& s : envs) envp.push_back(&s[0]);
        envp.push_back(nullptr);
        char self[] = "/proc/self/exe";
        char disabled[] = "--gtest_also_run_disabled_tests";
        char* argv[] = {self, &filter[0], disabled, nullptr};
        execve(self, argv, envp.data());
        _exit(98);
      },
      deadline_s);
}

inline std::string Describe(const ChildResult& r) {
  std::string s = r.hung ? "hung" : r.exited ? "exit code " + std::to_string(r.code)
                                             : "killed by signal " + std::to_string(r.code);
  return s + "; stderr:\n" + r.err;
}

}  // namespace hak_variant_test

#endif  // HAK_TESTS_VARIANTS_VARIANT_UTIL_H
