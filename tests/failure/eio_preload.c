/* A fault for the failure tests: an LD_PRELOAD library under which every pread() of a file whose
 * name ends in $TANK_EIO_FILE (e.g. "data.mdb") fails with EIO, as a failing SD card's bad block
 * does. Other files, and other calls, go to the C library as usual.
 *
 *   LD_PRELOAD=.../tank_eio_preload.so TANK_EIO_FILE=data.mdb tank run -c ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int names_target(int fd) {
  const char* suffix = getenv("TANK_EIO_FILE");
  if (suffix == NULL || *suffix == '\0') return 0;
  char link[64];
  char path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return 0;
  path[n] = '\0';
  size_t len = strlen(suffix);
  return (size_t)n >= len && strcmp(path + n - len, suffix) == 0;
}

typedef ssize_t (*pread_fn)(int, void*, size_t, off_t);

ssize_t pread(int fd, void* buf, size_t count, off_t offset) {
  static pread_fn real = NULL;
  if (real == NULL) real = (pread_fn)dlsym(RTLD_NEXT, "pread");
  if (names_target(fd)) {
    errno = EIO;
    return -1;
  }
  return real(fd, buf, count, offset);
}

ssize_t pread64(int fd, void* buf, size_t count, off_t offset) {
  static pread_fn real = NULL;
  if (real == NULL) real = (pread_fn)dlsym(RTLD_NEXT, "pread64");
  if (names_target(fd)) {
    errno = EIO;
    return -1;
  }
  return real(fd, buf, count, offset);
}
