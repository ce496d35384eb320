/* SPDX-License-Identifier: MIT */
/* fork_server.h - runs each fuzz input in a fresh process forked from a small one.
 *
 * A harness whose inputs must end the process (misuse.c: the hardened variant stops on
 * the injected misuse) needs a process per input. Forking the fuzzing engine itself
 * costs about as much as the input: fork copies the engine's page tables (libFuzzer's
 * corpus tables alone are 20 MiB) and the child's exit tears them down again. The
 * server is forked once, before the engine grows (LLVMFuzzerInitialize), and forks one
 * child per input from there.
 *
 * libFuzzer learns coverage from counters in the process that runs the input, which a
 * child's counters never reached: each child maps the pages holding the counters
 * (__sancov_cntrs) from a memfd shared with the engine, which adds the child's counts
 * to its own once the child is gone. (AFL++'s coverage map is shared memory already.) */
#ifndef HAK_FUZZ_FORK_SERVER_H
#define HAK_FUZZ_FORK_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The function each child runs on an input; it should end the process (_exit or a
 * signal); if it returns, the child exits with status 0. */
typedef void (*hak_fork_server_fn)(const uint8_t* data, size_t size);

/* Forks the server now (once); later calls do nothing. Call it while the process is
 * still small and single-threaded. hak_fork_server_run() starts it when needed. */
void hak_fork_server_start(hak_fork_server_fn fn);

/* Runs fn(data, size) in a new child of the server, collects what the child wrote to
 * stderr into err (NUL-terminated, at most cap - 1 bytes: the start is kept) and its
 * wait status into *status. A server that is gone is replaced and the input tried
 * once more. Returns 0, or -1 when no child could be run. */
int hak_fork_server_run(hak_fork_server_fn fn, const uint8_t* data, size_t size, char* err, size_t cap,
                        int* status);

/* The server's process id, or -1 when none runs (for tests). */
pid_t hak_fork_server_pid(void);

#ifdef __cplusplus
}
#endif

#endif /* HAK_FUZZ_FORK_SERVER_H */
