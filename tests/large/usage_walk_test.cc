/* SPDX-License-Identifier: MIT */
// usage_walk_test.cc - the usage walk (hak_stats_get, mallinfo) reads the header of
// each run in use, at the heads the region recorded. It used to step from header to
// header by the run length each header gives. A run just taken still holds, until its
// taker writes the new header, the header of whatever began there before: for a longer
// run, the old length stepped the walk past the next run's header into its middle.
// There a whale's bytes were read as a header (its in-use bytes went uncounted), and in
// the hardened variant a whale waiting PROT_NONE in the ring faulted the walk: CI saw
// Hardened.SnapshotsWhileClosedUnitsAreTakenAgainDoNotFault die of SIGSEGV in
// hak_segment_usage. The cas_fail variant's whale_taken hook takes a snapshot inside
// that window.
//
// Its own binary, started with no whale ring (a freed whale goes straight to the region)
// and a ten-minute purge delay (freed units stay dirty, their old headers intact).
#include <vector>

#include "large_util.h"  // last of the includes: it includes hak_test_names.h

extern "C" void hak_probe_set_whale_taken_hook(void (*hook)(void*));

namespace hak_large_test {
namespace {

size_t Unit() { return hak_probe_segment_size(); }
uintptr_t UnitOf(const void* p) { return Addr(p) / Unit(); }

int g_hook_calls = 0;
uintptr_t g_hook_run = 0;
hak_stats_t g_in_window;

void SnapshotInTheWindow(void* run) {
  g_hook_calls++;
  g_hook_run = Addr(run);
  g_in_window = Stats();
}

TEST(UsageWalk, AHeaderNotYetWrittenDoesNotHideTheNextRun) {
  // Whales are runs of two units or more (below, big blocks). The layout, in units
  // from x (x % 4 == 1):
  //   A at x..x+2, freed: x's header still says three units;
  //   W at x+2..x+3, aligned to four units (its block at x+3, its run's header at x+2);
  //   N at x..x+1, taken where A began: until N's header is written, a walk stepping
  //   by headers went from x three units on, to x+3, the middle of W, past W's header.
  const size_t three_units = 2 * Unit() + Unit() / 2, two_units = Unit() + Unit() / 4;
  std::vector<void*> pads;  // whales that landed elsewhere, kept to shift the next one
  void* a = nullptr;
  for (int i = 0; i < 8 && a == nullptr; i++) {
    void* p = malloc(three_units);
    ASSERT_NE(p, nullptr);
    ASSERT_TRUE(hak_probe_is_whale(p));
    ASSERT_EQ(hak_probe_whale_units(p), 3u);
    if (UnitOf(p) % 4 == 1) a = p;
    else pads.push_back(p);
  }
  ASSERT_NE(a, nullptr) << "no whale's run began at a unit 1 mod 4";
  const uintptr_t x = UnitOf(a);
  free(a);  // units x..x+2 free and dirty; x's old header says three units

  void* w = aligned_alloc(4 * Unit(), Unit() / 4);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(hak_probe_is_whale(w));
  ASSERT_EQ(UnitOf(w), x + 3) << "premise: the aligned whale's run starts inside A's old run";
  ASSERT_EQ(hak_probe_whale_units(w), 2u) << "premise: it reaches past A's old run";

  const hak_stats_t before = Stats();
  g_hook_calls = 0;
  hak_probe_set_whale_taken_hook(SnapshotInTheWindow);
  void* n = malloc(two_units);
  hak_probe_set_whale_taken_hook(nullptr);
  ASSERT_NE(n, nullptr);
  ASSERT_EQ(g_hook_calls, 1);
  ASSERT_EQ(g_hook_run / Unit(), x) << "premise: N's run is where A's began";
  ASSERT_EQ(hak_probe_whale_units(n), 2u);

  // Nothing changed hands in between: the snapshot in the window counts what was in
  // use before N, W's block included.
  EXPECT_EQ(g_in_window.in_use_bytes, before.in_use_bytes) << "the walk missed a run in use";
  EXPECT_EQ(g_in_window.in_use_blocks, before.in_use_blocks);
  EXPECT_EQ(Stats().in_use_bytes, before.in_use_bytes + two_units);  // N's block (whole pages)

  free(n);
  free(w);
  for (void* p : pads) free(p);
}

}  // namespace
}  // namespace hak_large_test
