/* SPDX-License-Identifier: MIT */
/* replay_main.c - main() of the corpus replay tests: see replay.c. */
int hak_fuzz_replay_main(int argc, char** argv);

int main(int argc, char** argv) {
  return hak_fuzz_replay_main(argc, argv);
}
