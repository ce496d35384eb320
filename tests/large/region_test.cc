/* SPDX-License-Identifier: MIT */
// region_test.cc - where the region puts new runs. Clean runs go to the fullest chunk
// that has room, not to the newest one or to where some earlier run began: what is in
// use then packs into few chunks, and a chunk left empty goes back to the OS. The bug:
// new segments and small whales went to the newest chunk (or to an old run's start in
// an empty chunk), so a few stray segments could pin 1 GiB of address space (the
// threads fuzzer's cumulative limit tripped at 4 chunks for 5 segments).
//
// A request that no freed run fits whole takes the free run holding the most units that
// may still be resident, not the lowest clean one: 20 buffers of 5-25 MiB replaced at
// random (a public large-block benchmark's pattern) faulted in a third of their pages
// again at every step.
//
// Its own binary: the scenarios need the region in a known state.
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

uintptr_t RunOf(const void* whale) {
  return Addr(whale) & ~(uintptr_t)(hak_probe_segment_size() - 1);
}

TEST(Region, ARunNoFreedRunFitsReusesTheMostResidentUnits) {
  const size_t unit = hak_probe_segment_size();
  const size_t page = hak_probe_os_page_size();
  hak_collect(true);
  // d: one unit, freed last: hardened level 2 holds the newest freed whale back from
  // reuse (kHakCacheHold), and it is d, not b, that it holds.
  void* d = malloc(unit - 5 * page);
  ASSERT_NE(d, nullptr);
  // a: 3 units, b: 2 units after it, both written on every page.
  void* a = malloc(3 * unit - 5 * page);
  void* b = malloc(2 * unit - 5 * page);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(hak_probe_whale_units(a), 3u);
  ASSERT_EQ(hak_probe_whale_units(b), 2u);
  ASSERT_LT(RunOf(a), RunOf(b)) << "premise: clean space is handed out lowest first";
  memset(a, 1, 3 * unit - 5 * page);
  memset(b, 2, 2 * unit - 5 * page);
  free(a);
  hak_collect(false);  // a's units purged: clean, and lower than b's
  free(b);             // b's units stay resident (whale ring or region)
  free(d);
  // 3 units: no freed run fits whole; the run taken must reuse b's resident units.
  void* c = malloc(3 * unit - 5 * page);
  ASSERT_NE(c, nullptr);
  const uintptr_t c_run = RunOf(c), b_run = RunOf(b);
  EXPECT_TRUE(c_run <= b_run + unit && c_run + 3 * unit > b_run)
      << "the new run starts " << (long)((intptr_t)(c_run - b_run) / (intptr_t)unit)
      << " units from b's resident ones and does not cover them";
  free(c);
}

}  // namespace
}  // namespace hak_large_test
