/* SPDX-License-Identifier: MIT */
/* qemu_exec_shim.c - lets a program run under qemu-user start programs of its own
 * architecture without binfmt_misc (ci/aarch64.sh).
 *
 * qemu-user emulates one process; an execve it passes to the host kernel of a guest
 * binary (an aarch64 ELF on an x86_64 host) fails with ENOEXEC unless binfmt_misc
 * sends such files to qemu, which needs a host-wide setting CI machines may not allow.
 * Loaded into the guest with LD_PRELOAD (qemu's -E), this library wraps execve and
 * execv: a guest ELF (or /proc/self/exe) is started as
 *   <HAK_QEMU_CMD...> -0 argv[0] -E LD_PRELOAD=<this> -E HAK_QEMU_CMD=...
 *                     -E HAK_QEMU_SHIM=<this> <path> argv[1..]
 * so the child runs under the same emulator, with the same options (sysroot, page size)
 * and this shim again. The guest's LD_PRELOAD is dropped from the host-side environment
 * (the host's loader would complain about a library of the wrong class). Anything else
 * is executed as asked. HAK_QEMU_CMD and HAK_QEMU_SHIM are read once at start: tests
 * hand their children environments of their own. */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char** environ;

#define SHIM_MAX_WORDS 32
static char shim_cmd_buf[1024];
static char* shim_cmd[SHIM_MAX_WORDS]; /* the emulator and its options, split at spaces */
static int shim_cmd_words;
static char shim_preload[PATH_MAX + 16];  /* LD_PRELOAD=<this library> */
static char shim_cmd_env[sizeof shim_cmd_buf + 16]; /* HAK_QEMU_CMD=... */
static char shim_self_env[PATH_MAX + 16];         /* HAK_QEMU_SHIM=<this library> */

__attribute__((constructor)) static void shim_init(void) {
  const char* cmd = getenv("HAK_QEMU_CMD");
  const char* self = getenv("HAK_QEMU_SHIM");
  if (cmd == NULL || self == NULL || strlen(cmd) >= sizeof shim_cmd_buf || strlen(self) >= PATH_MAX) return;
  strcpy(shim_cmd_env, "HAK_QEMU_CMD=");
  strcat(shim_cmd_env, cmd);
  strcpy(shim_self_env, "HAK_QEMU_SHIM=");
  strcat(shim_self_env, self);
  strcpy(shim_preload, "LD_PRELOAD=");
  strcat(shim_preload, self);
  strcpy(shim_cmd_buf, cmd);
  for (char* w = strtok(shim_cmd_buf, " "); w != NULL && shim_cmd_words < SHIM_MAX_WORDS - 1;
       w = strtok(NULL, " ")) {
    shim_cmd[shim_cmd_words++] = w;
  }
}

static int shim_is_guest_elf(const char* path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  Elf64_Ehdr h;
  ssize_t n = read(fd, &h, sizeof h);
  close(fd);
  return n == (ssize_t)sizeof h && memcmp(h.e_ident, ELFMAG, SELFMAG) == 0 && h.e_machine == EM_AARCH64;
}

int execve(const char* path, char* const argv[], char* const envp[]) {
  char resolved[PATH_MAX];
  if (strcmp(path, "/proc/self/exe") == 0) { /* qemu answers with the guest binary */
    ssize_t n = readlink(path, resolved, sizeof resolved - 1);
    if (n > 0) {
      resolved[n] = '\0';
      path = resolved;
    }
  }
  if (shim_cmd_words == 0 || !shim_is_guest_elf(path)) return (int)syscall(SYS_execve, path, argv, envp);
  size_t argc = 0, envc = 0;
  while (argv[argc] != NULL) argc++;
  while (envp[envc] != NULL) envc++;
  char** args = calloc((size_t)shim_cmd_words + argc + 12, sizeof(char*));
  char** env = calloc(envc + 1, sizeof(char*));
  if (args == NULL || env == NULL) {
    errno = ENOMEM;
    return -1;
  }
  size_t a = 0;
  for (int i = 0; i < shim_cmd_words; i++) args[a++] = shim_cmd[i];
  args[a++] = (char*)"-0";
  args[a++] = argc > 0 ? argv[0] : (char*)path;
  args[a++] = (char*)"-E";
  args[a++] = shim_preload;
  args[a++] = (char*)"-E";
  args[a++] = shim_cmd_env;
  args[a++] = (char*)"-E";
  args[a++] = shim_self_env;
  args[a++] = (char*)path;
  for (size_t i = 1; i < argc; i++) args[a++] = argv[i];
  size_t e = 0;
  for (size_t i = 0; i < envc; i++) {
    if (strncmp(envp[i], "LD_PRELOAD=", 11) != 0) env[e++] = envp[i];
  }
  syscall(SYS_execve, args[0], args, env);
  int saved = errno;
  free(args);
  free(env);
  errno = saved;
  return -1;
}

int execv(const char* path, char* const argv[]) { return execve(path, argv, environ); }
