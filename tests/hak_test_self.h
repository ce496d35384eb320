/* SPDX-License-Identifier: MIT */
// hak_test_self.h - runs one test of this very binary in a fresh child process, so that
// hakmem's options (read once, at start, from HAKMEM_* variables) can differ per test.
//   RunSelf(name, extra, &status)  runs "Suite.DISABLED_Test" (name) with our
//                                  environment minus every HAKMEM_* variable, plus
//                                  `extra` ("NAME=value"); returns everything the child
//                                  wrote on stdout and stderr; *status gets its wait
//                                  status (-1 if it could not be started).
#ifndef HAKMEM_TESTS_HAK_TEST_SELF_H
#define HAKMEM_TESTS_HAK_TEST_SELF_H

#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

extern char** environ;

inline std::string RunSelf(const std::string& name, const std::vector<std::string>& extra, int* status) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; e++) {
    if (strncmp(*e, "HAKMEM_", 7) != 0) env.push_back(*e);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  std::vector<char*> envp;
  for (std::string& s : env) envp.push_back(&s[0]);
  envp.push_back(nullptr);
  std::string filter = "--gtest_filter=" + name;
  char self[] = "/proc/self/exe";
  char disabled[] = "--gtest_also_run_disabled_tests";
  char* argv[] = {self, &filter[0], disabled, nullptr};
  int fds[2];
  *status = -1;
  if (pipe(fds) != 0) return "pipe failed";
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[1]);
    execve(self, argv, envp.data());
    _exit(98);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) != 0) {
    if (n > 0) out.append(buf, (size_t)n);
    else if (errno != EINTR) break;
  }
  close(fds[0]);
  waitpid(pid, status, 0);
  return out;
}

#endif
