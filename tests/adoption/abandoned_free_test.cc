/* SPDX-License-Identifier: MIT */
// A free of the last block of a page in an abandoned segment (its thread exited) empties
// the page, and maybe the segment, which then goes back to the region. The freer must
// keep the segment until it is done with it: before, the block went back to its page
// first and the segment's lock was taken after, and in between an adopter could empty
// the segment and hand it to the region, where another thread took the unit (as a new
// segment, or the inside of a whale) while the freer went on reading it as the
// segment's header (TSan saw it in //fuzz:concurrent_small_replay_test in CI). Worse,
// an emptied chunk goes back to the system on hak_collect(true) (or malloc_trim): the
// old code then read unmapped memory, and this test died of SIGSEGV there. The cas_fail
// variant's test hook runs an adopter's step inside that window on every run.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "hak_test_stats.h"
#include "hakmem.h"

extern "C" {
void hak_probe_set_abandoned_free_last_hook(void (*hook)(void*));
void hak_probe_set_abandoned_unlisted_hook(void (*hook)(void*));
const void* hak_probe_segment_of(const void* p);
uint32_t hak_probe_segment_used_slices(const void* p);
int hak_probe_segment_is_abandoned(const void* p);
}

namespace {

std::atomic<int> g_hook_calls{0};
std::atomic<uint32_t> g_used_slices_after_adopter{0};

// What an adopter or a decay pass does when it gets the lock first: hak_collect(true)
// takes every abandoned segment off the list, collects its pages' frees and hands
// emptied pages, and emptied segments, back.
void PlayAdopterInTheWindow(void* block) {
  g_hook_calls.fetch_add(1);
  hak_collect(true);
  g_used_slices_after_adopter.store(hak_probe_segment_used_slices(block));
}

// One block left by an exited thread: alone in its segment.
void* BlockOfAnExitedThread(size_t size) {
  void* left = nullptr;
  std::thread worker([&left, size] {
    left = hak_malloc(size);
    if (left != nullptr) memset(left, 0x5a, size);
  });
  worker.join();
  return left;
}

TEST(AbandonedFree, TheLastBlockKeepsItsSegmentUntilItsFreeIsDone) {
  hak_collect(true);  // no other abandoned segment: the worker takes a fresh one
  const uint64_t start = LiveSegments();
  void* left = BlockOfAnExitedThread(64);
  ASSERT_NE(left, nullptr);
  ASSERT_TRUE(hak_probe_segment_is_abandoned(left));
  ASSERT_EQ(LiveSegments(), start + 1);

  g_hook_calls = 0;
  hak_probe_set_abandoned_free_last_hook(PlayAdopterInTheWindow);
  hak_free(left);
  hak_probe_set_abandoned_free_last_hook(nullptr);

  ASSERT_EQ(g_hook_calls.load(), 1) << "the free did not take the last-block path of an abandoned segment";
  EXPECT_GT(g_used_slices_after_adopter.load(), 0u)
      << "an adopter handed the segment back to the region while a free into it was not done with it";
  // And the free completed the job: the segment went back once, nothing is left.
  EXPECT_EQ(LiveSegments(), start) << "the exited thread's segment was not given back after its last free";
  EXPECT_FALSE(hak_probe_segment_is_abandoned(left));
}

// Two blocks an exited thread left in one segment, on pages of two classes. With
// idle_span the thread also emptied a page of a third class: an idle free span, so its
// exit schedules a decay pass of the abandoned list for when the delay has passed.
void LeaveTwoBlocks(void* blocks[2], bool idle_span) {
  std::thread worker([blocks, idle_span] {
    blocks[0] = hak_malloc(64);
    blocks[1] = hak_malloc(3000);  // another class: another page of the same segment
    if (!idle_span) return;
    std::vector<void*> scratch;
    for (int i = 0; i < 200; i++) scratch.push_back(hak_malloc(1500));
    for (void* p : scratch) hak_free(p);
  });
  worker.join();
}

// The same window with the block not the segment's last: the page empties and goes back
// to the segment, which stays abandoned (listed again) with its other block, and
// comes back when that one is freed.
TEST(AbandonedFree, ThePageOfTheLastBlockGoesBackAndTheSegmentStaysListed) {
  hak_collect(true);
  const uint64_t start = LiveSegments();
  void* blocks[2] = {nullptr, nullptr};
  LeaveTwoBlocks(blocks, false);
  ASSERT_NE(blocks[0], nullptr);
  ASSERT_NE(blocks[1], nullptr);
  ASSERT_EQ(LiveSegments(), start + 1) << "the worker's blocks are expected in one segment";
  const uint32_t used_before = hak_probe_segment_used_slices(blocks[0]);

  g_hook_calls = 0;
  hak_probe_set_abandoned_free_last_hook(PlayAdopterInTheWindow);
  hak_free(blocks[0]);
  hak_probe_set_abandoned_free_last_hook(nullptr);
  ASSERT_EQ(g_hook_calls.load(), 1);
  EXPECT_LT(hak_probe_segment_used_slices(blocks[1]), used_before) << "the emptied page did not go back";
  EXPECT_TRUE(hak_probe_segment_is_abandoned(blocks[1])) << "the segment left the abandoned list with a block in use";

  hak_free(blocks[1]);
  EXPECT_EQ(LiveSegments(), start);
}

// A free into an abandoned segment that finds it off the list (a decay pass or an
// adopter holds it) goes onto its page's list. When that was the page's last block,
// nothing collected it before: the page, and the segment, stayed in use until a thread
// adopted the segment or called hak_collect(true). The decay pass now collects the
// segments' remote frees (and such a free schedules a pass). The hook frees the block
// while the pass holds the segment. Its own binary runs with a 20 ms purge delay.
std::atomic<void*> g_free_while_unlisted{nullptr};
std::atomic<const void*> g_unlisted_segment{nullptr};

void FreeWhileTheDecayPassHoldsTheSegment(void* segment) {
  if (segment != g_unlisted_segment.load()) return;  // another test's segment
  void* block = g_free_while_unlisted.exchange(nullptr);
  if (block == nullptr) return;
  g_hook_calls.fetch_add(1);
  hak_free(block);  // the segment is unlisted: freed remotely
}

TEST(AbandonedFree, AFreeWhileADecayPassHoldsTheSegmentIsCollectedByThePass) {
  hak_collect(true);
  const uint64_t start = LiveSegments();
  void* blocks[2] = {nullptr, nullptr};
  LeaveTwoBlocks(blocks, true);
  ASSERT_NE(blocks[0], nullptr);
  ASSERT_NE(blocks[1], nullptr);
  ASSERT_EQ(LiveSegments(), start + 1) << "the worker's blocks are expected in one segment";
  ASSERT_TRUE(hak_probe_segment_is_abandoned(blocks[0]));

  g_hook_calls = 0;
  g_unlisted_segment = hak_probe_segment_of(blocks[0]);
  g_free_while_unlisted = blocks[0];
  hak_probe_set_abandoned_unlisted_hook(FreeWhileTheDecayPassHoldsTheSegment);
  hak_stats_t s;
  ASSERT_EQ(hak_stats_read(&s), 0);
  for (size_t tries = 0; tries < 100 && g_hook_calls.load() == 0; tries++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(s.purge_delay_now_ms + 5));
    // A big block the BigCache cannot serve (each larger than the last): its slow path
    // runs the passes that came due, and adopts nothing (a pool page's slow path might
    // adopt the worker's segment, and the adopter would collect the block instead).
    hak_free(hak_malloc(((size_t)3 << 19) + tries * ((size_t)16 << 10)));
  }
  hak_probe_set_abandoned_unlisted_hook(nullptr);
  ASSERT_EQ(g_hook_calls.load(), 1) << "no decay pass of the abandoned list ran";

  // The block's page went back during the pass: the last block's free now empties the
  // segment, which goes back too. (The big blocks' segment stays: count from here.)
  const uint64_t before_last = LiveSegments();
  hak_free(blocks[1]);
  EXPECT_EQ(LiveSegments(), before_last - 1) << "the block freed while the pass held its segment was never collected";
}

}  // namespace
