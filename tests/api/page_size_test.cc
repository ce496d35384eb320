/* SPDX-License-Identifier: MIT */
// Kernels with 16 KiB and 64 KiB pages (arm64 distributions, Apple-silicon Linux,
// ppc64le), pretended through the OS layer's injectable ops (page_size_probe.c): every
// mapping, unmapping, purge and remap hakmem asks for is aligned to the larger page
// (the fake fails others with EINVAL, as the kernel would), and what the API rounds to
// pages (valloc, pvalloc, huge blocks' usable sizes) uses it. Each case runs in a child
// of the test: the pretended ops must be in before hakmem maps anything.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "hak_test_env.h"
#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

extern "C" {
void hak_probe_pretend_page_size(size_t page);
size_t hak_probe_page_violations(void);
size_t hak_probe_page_calls(void);
}

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

// Everything that reaches the OS: every tier, realloc of huge blocks growing (in
// place, by mremap) and shrinking, aligned and page-rounded calls, purges and trims.
// Returns 0, or the number of the failed check.
int Workload(size_t page) {
  std::vector<void*> live;
  for (size_t size : {(size_t)24, 3 * kKiB, 40 * kKiB, 300 * kKiB, 3 * kMiB, 9 * kMiB}) {
    for (int i = 0; i < 40; i++) {
      unsigned char* p = static_cast<unsigned char*>(hak_malloc(size + (size_t)i * 1000));
      if (p == nullptr) return 1;
      p[0] = p[size - 1] = 1;
      live.push_back(p);
    }
  }
  void* v = hak_valloc(1);
  void* pv = hak_pvalloc(page + 1);
  if (v == nullptr || (uintptr_t)v % page != 0) return 2;
  if (pv == nullptr || (uintptr_t)pv % page != 0 || hak_usable_size(pv) % page != 0 || hak_usable_size(pv) < 2 * page) {
    return 3;
  }
  void* whale = hak_malloc(5 * kMiB + 123);
  if (whale == nullptr || hak_usable_size(whale) != HakWhaleUsable(5 * kMiB + 123, page)) return 4;
  for (size_t to : {6 * kMiB + 1, 40 * kMiB + 7, 90 * kMiB, 7 * kMiB + 3, 5 * kMiB}) {
    whale = hak_realloc(whale, to);
    if (whale == nullptr || hak_usable_size(whale) != HakWhaleUsable(to, page)) return 5;
    memset(whale, 3, 4096);
  }
  void* aligned = nullptr;
  if (hak_posix_memalign(&aligned, 8 * kMiB, 100) != 0) return 6;
  for (size_t i = 0; i < live.size(); i += 2) hak_free(live[i]);
  hak_collect(false);
  for (size_t i = 1; i < live.size(); i += 2) hak_free(live[i]);
  hak_free(v);
  hak_free(pv);
  hak_free(whale);
  hak_free(aligned);
  hak_collect(true);  // purges everything, unmaps idle chunks
  hak_stats_t s;
  hak_stats_read(&s);
  if (s.os_mmap.failures + s.os_munmap.failures + s.os_madvise.failures + s.os_mremap.failures +
          s.os_mprotect.failures != 0) return 7;
  return 0;
}

void RunPretending(size_t page) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    hak_probe_pretend_page_size(page);
    int code = Workload(page);
    if (code == 0 && hak_probe_page_violations() != 0) code = 20;
    if (code == 0 && hak_probe_page_calls() < 5) code = 21;  // the fake must have seen the calls
    _exit(code);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "failed check " << WEXITSTATUS(status)
                                    << " (20: a call not aligned to the page; 7: an OS call failed)";
}

TEST(PageSize, SixteenKiBPages) { RunPretending(16 * kKiB); }
TEST(PageSize, SixtyFourKiBPages) { RunPretending(64 * kKiB); }

}  // namespace
