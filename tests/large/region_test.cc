/* SPDX-License-Identifier: MIT */
// region_test.cc - where the region puts new runs. Clean runs go to the fullest chunk
// that has room, not to the newest one or to where some earlier run began: what is in
// use then packs into few chunks, and a chunk left empty goes back to the OS. The bug:
// new segments and small whales went to the newest chunk (or to an old run's start in
// an empty chunk), so a few stray segments could pin 1 GiB of address space (the
// threads fuzzer's cumulative limit tripped at 4 chunks for 5 segments).
//
// Its own binary: the scenario needs the region in a known state.
#include <vector>

#include "large_util.h"  // last of the includes: it includes hak_test_names.h

namespace hak_large_test {
namespace {

uintptr_t ChunkOf(const void* p) {
  return Addr(p) & ~(uintptr_t)(hak_probe_chunk_size() - 1);
}

TEST(Region, CleanRunsGoToTheFullestChunkAndEmptyChunksGoBack) {
  const size_t unit = hak_probe_segment_size();
  const size_t chunk = hak_probe_chunk_size();
  const size_t page = hak_probe_os_page_size();
  hak_collect(true);
  // A whale kept live: its chunk (A) has units in use.
  void* keep = malloc(5 * kMiB);
  ASSERT_NE(keep, nullptr);
  // A whale as long as a chunk allows: it needs a chunk of its own (B).
  void* huge = malloc(chunk - 2 * unit);
  ASSERT_NE(huge, nullptr);
  ASSERT_NE(ChunkOf(huge), ChunkOf(keep)) << "the long whale should have needed a chunk of its own";
  const uintptr_t b = ChunkOf(huge);
  free(huge);                 // B's units go back; a run began at B's first unit
  hak_collect(false);         // purged: every free unit clean, both chunks kept mapped
  hak_stats_t before = Stats();
  ASSERT_EQ(before.region_dirty_bytes, 0u);
  ASSERT_GE(before.region_chunks, 2u);
  // Whales of one unit from clean units: all in A, the fuller chunk.
  std::vector<void*> small;
  for (int i = 0; i < 8; i++) {
    void* p = malloc(unit - 5 * page);
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(hak_probe_whale_units(p), 1u);
    EXPECT_NE(ChunkOf(p), b) << "whale " << i << " went to the empty chunk";
    small.push_back(p);
  }
  // B holds nothing: it goes back to the OS.
  hak_collect(true);
  hak_stats_t after = Stats();
  EXPECT_LE(after.region_chunks, before.region_chunks - 1) << "the empty chunk stayed mapped";
  for (void* p : small) free(p);
  free(keep);
}

}  // namespace
}  // namespace hak_large_test
