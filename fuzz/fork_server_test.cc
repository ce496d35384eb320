// SPDX-License-Identifier: MIT
// fork_server_test.cc - the fork server of the misuse harness (fork_server.h): what a
// child writes and how it ends reach the caller intact, input bytes reach the child,
// a long stderr neither hangs nor overflows, and a killed server is replaced.
#include "fuzz/fork_server.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace {

// The child's behaviour comes from its input: byte 0 picks it.
void child(const uint8_t* data, size_t size) {
  if (size == 0) _exit(9);
  switch (data[0]) {
    case 'e':  // echo the rest to stderr, exit 7
      fwrite(data + 1, 1, size - 1, stderr);
      fflush(stderr);
      _exit(7);
    case 'a':  // a report, then abort
      fprintf(stderr, "fatal: something\n");
      abort();
    case 's': {  // sum of the bytes as the exit status
      unsigned sum = 0;
      for (size_t i = 1; i < size; i++) sum += data[i];
      _exit((int)(sum & 0xff));
    }
    case 'l': {  // 1 MiB of stderr
      std::string chunk(4096, 'x');
      for (int i = 0; i < 256; i++) fwrite(chunk.data(), 1, chunk.size(), stderr);
      fflush(stderr);
      _exit(0);
    }
    default:  // return: the server's child exits 0
      return;
  }
}

int run(const std::string& input, std::string* err, int* status, size_t cap = 4096) {
  std::vector<char> buf(cap);
  int rc = hak_fork_server_run(child, reinterpret_cast<const uint8_t*>(input.data()), input.size(), buf.data(), cap,
                               status);
  if (rc == 0) *err = buf.data();
  return rc;
}

TEST(ForkServer, StderrAndExitStatusReachTheCaller) {
  std::string err;
  int status = 0;
  ASSERT_EQ(run("ehello from the child", &err, &status), 0);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 7);
  EXPECT_EQ(err, "hello from the child");
}

TEST(ForkServer, AnAbortIsReportedAsSignal) {
  std::string err;
  int status = 0;
  ASSERT_EQ(run("a", &err, &status), 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGABRT);
  EXPECT_EQ(err, "fatal: something\n");
}

TEST(ForkServer, InputBytesArriveIntact) {
  std::string input = "s";
  unsigned sum = 0;
  for (int i = 0; i < 70000; i++) {  // larger than any pipe or socket buffer
    input.push_back(static_cast<char>(i * 7 + 3));
    sum += static_cast<uint8_t>(i * 7 + 3);
  }
  std::string err;
  int status = 0;
  ASSERT_EQ(run(input, &err, &status), 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), static_cast<int>(sum & 0xff));
}

TEST(ForkServer, AReturningChildExitsZero) {
  std::string err = "unset";
  int status = -1;
  ASSERT_EQ(run("r", &err, &status), 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(err, "");
}

TEST(ForkServer, LongStderrIsTruncatedToTheBuffer) {
  std::string err;
  int status = -1;
  ASSERT_EQ(run("l", &err, &status, 100), 0);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(err, std::string(99, 'x'));
  // The stream stays in step: the next run gets its own answer.
  ASSERT_EQ(run("eok", &err, &status), 0);
  EXPECT_EQ(err, "ok");
}

TEST(ForkServer, AKilledServerIsReplaced) {
  std::string err;
  int status = 0;
  ASSERT_EQ(run("efirst", &err, &status), 0);
  pid_t old_server = hak_fork_server_pid();
  ASSERT_GT(old_server, 0);
  ASSERT_EQ(kill(old_server, SIGKILL), 0);
  while (waitpid(old_server, nullptr, 0) < 0) {
  }
  ASSERT_EQ(run("esecond", &err, &status), 0);
  EXPECT_EQ(err, "second");
  EXPECT_NE(hak_fork_server_pid(), old_server);
}

}  // namespace
