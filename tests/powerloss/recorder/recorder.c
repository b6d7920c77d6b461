/* The power-cut simulator's recorder (tests/powerloss/README.md): an LD_PRELOAD library that
 * logs every call through which a process changes files under one directory tree, so that
 * crash_state.cpp can build the disk states a power cut could leave.
 *
 * Promises:
 * - With TANK_RECORD_DIR (an absolute path) and TANK_RECORD_LOG set, every successful call that
 *   changes a file or directory entry under TANK_RECORD_DIR is appended to the log, one entry
 *   per call (record_format.h), with CLOCK_MONOTONIC before and after the call, pid, thread id,
 *   the file (path and inode), the offset and the bytes written. Without them it does nothing.
 * - Each entry is one writev(2) to an O_APPEND descriptor: concurrent threads and processes
 *   (fork) never interleave, and a kill -9 can only cut the last entry short.
 * - A MAP_SHARED + PROT_WRITE mapping of a recorded file aborts the process with a message: the
 *   model would not see writes made through it. lock.mdb is not recorded at all: LMDB
 *   re-initialises it whenever it is the first to open the environment (after any reboot), so its
 *   content never matters after a power cut (and LMDB maps it shared and writable).
 * - Fault switch for the simulator's self-test: TANK_RECORD_SKIP_SYNC=<file name> makes fsync
 *   and fdatasync of files with that name do nothing (and not be logged) and drops O_DSYNC /
 *   O_SYNC when they are opened: a program that believes it synced, and did not.
 *
 * Written in C against libc only, so nothing in it depends on libstdc++ being initialised when
 * the first intercepted call arrives. Not covered: writes through stdio's internal calls, io_uring,
 * sendfile/copy_file_range, link/symlink, mprotect adding PROT_WRITE later (tank uses none of them
 * on its data directory). */
/* Both the plain and the 64-bit names are defined below: no redirection of one to the other. */
#undef _FILE_OFFSET_BITS
#undef _TIME_BITS
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "record_format.h"

#define MAX_FDS 65536
#define MAX_IOV 1024

struct tracked {
  uint64_t dev, ino;
  int is_dir;
  int dsync;
  int skip_sync;
  uint32_t path_len;
  char path[];
};

static _Atomic(struct tracked*) g_fds[MAX_FDS];
static char g_root[PATH_MAX];
static size_t g_root_len;
static int g_log_fd = -1;
static int g_active;
static char g_skip_sync[NAME_MAX + 1];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static __thread __attribute__((tls_model("initial-exec"))) pid_t t_tid;
static pid_t g_pid;

/* The real functions, found with dlsym(RTLD_NEXT). */
static int (*real_openat64)(int, const char*, int, ...);
static int (*real_close)(int);
static int (*real_close_range)(unsigned, unsigned, int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_fcntl)(int, int, ...);
static ssize_t (*real_write)(int, const void*, size_t);
static ssize_t (*real_pwrite64)(int, const void*, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec*, int);
static ssize_t (*real_pwritev64)(int, const struct iovec*, int, off64_t);
static ssize_t (*real_pwritev64v2)(int, const struct iovec*, int, off64_t, int);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_truncate64)(const char*, off64_t);
static int (*real_fallocate64)(int, int, off64_t, off64_t);
static int (*real_posix_fallocate64)(int, off64_t, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_sync_file_range)(int, off64_t, off64_t, unsigned);
static int (*real_syncfs)(int);
static void (*real_sync)(void);
static int (*real_renameat2)(int, const char*, int, const char*, unsigned);
static int (*real_renameat)(int, const char*, int, const char*);
static int (*real_unlinkat)(int, const char*, int);
static int (*real_mkdirat)(int, const char*, mode_t);
static void* (*real_mmap64)(void*, size_t, int, int, int, off64_t);

static void die(const char* what) {
  char msg[PATH_MAX + 200];
  int n = snprintf(msg, sizeof msg, "tank powerloss recorder: %s\n", what);
  if (n > 0) {
    ssize_t ignored = syscall(SYS_write, 2, msg, (size_t)n);
    (void)ignored;
  }
  abort();
}

static void* need(const char* name) {
  void* f = dlsym(RTLD_NEXT, name);
  if (f == NULL) {
    char msg[128];
    snprintf(msg, sizeof msg, "cannot find the real %s", name);
    die(msg);
  }
  return f;
}

static void* maybe(const char* name) { return dlsym(RTLD_NEXT, name); }

/* A function pointer from dlsym (ISO C has no conversion from void* to a function pointer). */
#define RESOLVE(var, address)              \
  do {                                     \
    void* resolved_ = (address);           \
    memcpy(&(var), &resolved_, sizeof(var)); \
  } while (0)

static void forget_thread_ids(void) {
  t_tid = 0;
  g_pid = (pid_t)syscall(SYS_getpid);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint32_t thread_id(void) {
  if (t_tid == 0) t_tid = (pid_t)syscall(SYS_gettid);
  return (uint32_t)t_tid;
}

/* Appends one entry: header, paths, data, trailer, in one writev. */
static void emit(struct tank_rec_header* h, const char* path, const char* path2, const struct iovec* data, int ndata,
                 uint64_t data_bytes) {
  if (g_log_fd < 0) return;
  h->magic = TANK_REC_MAGIC;
  h->pid = (uint32_t)g_pid;
  h->tid = thread_id();
  h->path_len = path ? (uint32_t)strlen(path) : 0;
  h->path2_len = path2 ? (uint32_t)strlen(path2) : 0;
  const uint64_t total = sizeof *h + h->path_len + h->path2_len + data_bytes + 4;
  if (total > UINT32_MAX) die("an entry of more than 4 GiB");
  h->total = (uint32_t)total;
  uint32_t trailer = TANK_REC_TRAILER ^ h->total;

  struct iovec small[8];
  struct iovec* iov = small;
  if (ndata + 4 > (int)(sizeof small / sizeof small[0])) {
    iov = malloc(sizeof *iov * (size_t)(ndata + 4));
    if (iov == NULL) die("out of memory");
  }
  int n = 0;
  iov[n++] = (struct iovec){h, sizeof *h};
  if (h->path_len) iov[n++] = (struct iovec){(void*)path, h->path_len};
  if (h->path2_len) iov[n++] = (struct iovec){(void*)path2, h->path2_len};
  /* Only the bytes the call really wrote. */
  uint64_t left = data_bytes;
  for (int i = 0; i < ndata && left > 0; ++i) {
    size_t take = data[i].iov_len < left ? data[i].iov_len : (size_t)left;
    if (take == 0) continue;
    iov[n++] = (struct iovec){data[i].iov_base, take};
    left -= take;
  }
  iov[n++] = (struct iovec){&trailer, sizeof trailer};

  ssize_t wrote;
  if (n <= MAX_IOV) {
    do wrote = real_writev(g_log_fd, iov, n);
    while (wrote < 0 && errno == EINTR);
  } else {
    /* More pieces than one writev takes: copy them into one buffer (still one write). */
    char* buf = malloc(total);
    if (buf == NULL) die("out of memory");
    size_t at = 0;
    for (int i = 0; i < n; ++i) {
      memcpy(buf + at, iov[i].iov_base, iov[i].iov_len);
      at += iov[i].iov_len;
    }
    do wrote = real_write(g_log_fd, buf, total);
    while (wrote < 0 && errno == EINTR);
    free(buf);
  }
  if (iov != small) free(iov);
  /* A short append cannot be completed without tearing the stream for other writers. */
  if (wrote != (ssize_t)total) die("cannot append to TANK_RECORD_LOG (disk full?)");
}

static void init(void) {
  RESOLVE(real_openat64, need("openat64"));
  RESOLVE(real_close, need("close"));
  RESOLVE(real_close_range, maybe("close_range"));
  RESOLVE(real_dup, need("dup"));
  RESOLVE(real_dup2, need("dup2"));
  RESOLVE(real_dup3, need("dup3"));
  RESOLVE(real_fcntl, need("fcntl"));
  RESOLVE(real_write, need("write"));
  RESOLVE(real_pwrite64, need("pwrite64"));
  RESOLVE(real_writev, need("writev"));
  RESOLVE(real_pwritev64, need("pwritev64"));
  RESOLVE(real_pwritev64v2, maybe("pwritev64v2"));
  RESOLVE(real_ftruncate64, need("ftruncate64"));
  RESOLVE(real_truncate64, need("truncate64"));
  RESOLVE(real_fallocate64, need("fallocate64"));
  RESOLVE(real_posix_fallocate64, need("posix_fallocate64"));
  RESOLVE(real_fsync, need("fsync"));
  RESOLVE(real_fdatasync, need("fdatasync"));
  RESOLVE(real_sync_file_range, need("sync_file_range"));
  RESOLVE(real_syncfs, need("syncfs"));
  RESOLVE(real_sync, need("sync"));
  RESOLVE(real_renameat2, maybe("renameat2"));
  RESOLVE(real_renameat, need("renameat"));
  RESOLVE(real_unlinkat, need("unlinkat"));
  RESOLVE(real_mkdirat, need("mkdirat"));
  RESOLVE(real_mmap64, need("mmap64"));
  g_pid = (pid_t)syscall(SYS_getpid);
  pthread_atfork(NULL, NULL, forget_thread_ids);

  const char* root = getenv("TANK_RECORD_DIR");
  const char* log = getenv("TANK_RECORD_LOG");
  if (root == NULL || log == NULL || root[0] != '/') return;
  size_t len = strlen(root);
  while (len > 1 && root[len - 1] == '/') --len;
  if (len >= sizeof g_root) die("TANK_RECORD_DIR is too long");
  memcpy(g_root, root, len);
  g_root[len] = '\0';
  g_root_len = len;
  const char* skip = getenv("TANK_RECORD_SKIP_SYNC");
  if (skip != NULL) snprintf(g_skip_sync, sizeof g_skip_sync, "%s", skip);
  g_log_fd = real_openat64(AT_FDCWD, log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (g_log_fd < 0) die("cannot open TANK_RECORD_LOG");
  g_active = 1;
  struct tank_rec_header h = {0};
  h.kind = TANK_REC_BEGIN;
  h.fd = -1;
  h.start_ns = h.end_ns = now_ns();
  emit(&h, g_root, NULL, NULL, 0, 0);
}

static inline void ensure_init(void) { pthread_once(&g_once, init); }

__attribute__((constructor)) static void recorder_start(void) { ensure_init(); }

/* ---- paths ---- */

/* `path` made absolute (against `dirfd` or the working directory) and lexically normalised into
 * `out`; 0 when it cannot be. */
static int absolute(int dirfd, const char* path, char* out) {
  char joined[2 * PATH_MAX];
  if (path == NULL) return 0;
  if (path[0] == '/') {
    if (strlen(path) >= PATH_MAX) return 0;
    strcpy(joined, path);
  } else {
    char base[PATH_MAX];
    if (dirfd == AT_FDCWD) {
      if (getcwd(base, sizeof base) == NULL) return 0;
    } else {
      struct tracked* t = (dirfd >= 0 && dirfd < MAX_FDS) ? atomic_load(&g_fds[dirfd]) : NULL;
      if (t != NULL) {
        memcpy(base, t->path, t->path_len + 1);
      } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof base - 1);
        if (n < 0) return 0;
        base[n] = '\0';
      }
    }
    snprintf(joined, sizeof joined, "%s/%s", base, path);
  }
  /* Normalise: drop empty and "." components, resolve ".." lexically. */
  size_t o = 0;
  const char* p = joined;
  while (*p) {
    while (*p == '/') ++p;
    if (!*p) break;
    const char* end = strchr(p, '/');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n == 1 && p[0] == '.') {
    } else if (n == 2 && p[0] == '.' && p[1] == '.') {
      while (o > 0 && out[o - 1] != '/') --o;
      if (o > 0) --o;
    } else {
      if (o + 1 + n >= PATH_MAX) return 0;
      out[o++] = '/';
      memcpy(out + o, p, n);
      o += n;
    }
    p += n;
  }
  if (o == 0) out[o++] = '/';
  out[o] = '\0';
  return 1;
}

static int is_lock_file(const char* path) {
  const char* slash = strrchr(path, '/');
  return slash != NULL && strcmp(slash + 1, "lock.mdb") == 0;
}

/* Whether `abs` is the recorded directory or lies under it (lock.mdb excepted, see above). */
static int in_tree(const char* abs) {
  if (!g_active || strncmp(abs, g_root, g_root_len) != 0) return 0;
  if (abs[g_root_len] != '\0' && abs[g_root_len] != '/') return 0;
  return !is_lock_file(abs);
}

static int recorded(int dirfd, const char* path, char* abs) {
  ensure_init();
  return g_active && absolute(dirfd, path, abs) && in_tree(abs);
}

static int skips_sync(const char* abs) {
  if (g_skip_sync[0] == '\0') return 0;
  const char* slash = strrchr(abs, '/');
  return slash != NULL && strcmp(slash + 1, g_skip_sync) == 0;
}

/* ---- descriptors ---- */

static struct tracked* lookup(int fd) {
  if (fd < 0 || fd >= MAX_FDS || !g_active) return NULL;
  return atomic_load_explicit(&g_fds[fd], memory_order_acquire);
}

static void set_fd(int fd, struct tracked* t) {
  if (fd < 0) return;
  if (fd >= MAX_FDS) {
    if (t != NULL) die("a recorded file got a descriptor above 65535");
    return;
  }
  /* Entries are never freed: a thread may still be reading one (descriptors are few and the
   * recording is short). */
  atomic_store_explicit(&g_fds[fd], t, memory_order_release);
}

static void copy_fd(int from, int to) {
  if (to >= 0 && to != from) set_fd(to, lookup(from));
}

/* ---- open ---- */

static int do_open(int dirfd, const char* path, int flags, mode_t mode) {
  char abs[PATH_MAX];
  if (!recorded(dirfd, path, abs)) return real_openat64(dirfd, path, flags, mode);
  struct stat before;
  const int existed = fstatat(dirfd, path, &before, 0) == 0;
  const int skip = skips_sync(abs);
  if (skip) flags &= ~(O_DSYNC | O_SYNC);
  struct tank_rec_header h = {0};
  h.start_ns = now_ns();
  int fd = real_openat64(dirfd, path, flags, mode);
  h.end_ns = now_ns();
  if (fd < 0) return fd;
  int saved = errno;
  struct stat st;
  if (fstat(fd, &st) != 0) die("cannot fstat a recorded file");
  size_t len = strlen(abs);
  struct tracked* t = malloc(sizeof *t + len + 1);
  if (t == NULL) die("out of memory");
  t->dev = (uint64_t)st.st_dev;
  t->ino = (uint64_t)st.st_ino;
  t->is_dir = S_ISDIR(st.st_mode);
  t->dsync = (flags & O_DSYNC) != 0;  /* O_SYNC includes O_DSYNC's bit */
  t->skip_sync = skip;
  t->path_len = (uint32_t)len;
  memcpy(t->path, abs, len + 1);
  set_fd(fd, t);
  h.kind = TANK_REC_OPEN;
  h.fd = fd;
  h.dev = t->dev;
  h.ino = t->ino;
  h.flags = (uint16_t)((!existed ? TANK_REC_CREATED : 0) | (existed && (flags & O_TRUNC) && S_ISREG(st.st_mode) ? TANK_REC_TRUNCATED : 0) |
                       (t->is_dir ? TANK_REC_DIR : 0) | (t->dsync ? TANK_REC_DSYNC : 0));
  emit(&h, abs, NULL, NULL, 0, 0);
  errno = saved;
  return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
  return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_open(AT_FDCWD, path, flags, mode);
}
int open64(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_open(AT_FDCWD, path, flags, mode);
}
int openat(int dirfd, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_open(dirfd, path, flags, mode);
}
int openat64(int dirfd, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_open(dirfd, path, flags, mode);
}
int __open_2(const char* path, int flags) { return do_open(AT_FDCWD, path, flags, 0); }
int __open64_2(const char* path, int flags) { return do_open(AT_FDCWD, path, flags, 0); }
int __openat_2(int dirfd, const char* path, int flags) { return do_open(dirfd, path, flags, 0); }
int __openat64_2(int dirfd, const char* path, int flags) { return do_open(dirfd, path, flags, 0); }
int creat(const char* path, mode_t mode) { return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
int creat64(const char* path, mode_t mode) { return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode); }

/* ---- descriptors: close and dup ---- */

int close(int fd) {
  ensure_init();
  /* Forget it before the descriptor number can be given to another open. */
  if (lookup(fd) != NULL) set_fd(fd, NULL);
  return real_close(fd);
}

int close_range(unsigned first, unsigned last, int flags) {
  ensure_init();
  if (real_close_range == NULL) {
    errno = ENOSYS;
    return -1;
  }
  if (g_active && !(flags & CLOSE_RANGE_CLOEXEC)) {
    for (unsigned fd = first; fd <= last && fd < MAX_FDS; ++fd) {
      if (lookup((int)fd) != NULL) set_fd((int)fd, NULL);
    }
  }
  return real_close_range(first, last, flags);
}

int dup(int fd) {
  ensure_init();
  int r = real_dup(fd);
  copy_fd(fd, r);
  return r;
}
int dup2(int fd, int to) {
  ensure_init();
  int r = real_dup2(fd, to);
  copy_fd(fd, r);
  return r;
}
int dup3(int fd, int to, int flags) {
  ensure_init();
  int r = real_dup3(fd, to, flags);
  copy_fd(fd, r);
  return r;
}

static int do_fcntl(int fd, int cmd, va_list ap) {
  void* arg = va_arg(ap, void*);
  int r = real_fcntl(fd, cmd, arg);
  if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) copy_fd(fd, r);
  return r;
}
int fcntl(int fd, int cmd, ...) {
  ensure_init();
  va_list ap;
  va_start(ap, cmd);
  int r = do_fcntl(fd, cmd, ap);
  va_end(ap);
  return r;
}
int fcntl64(int fd, int cmd, ...) {
  ensure_init();
  va_list ap;
  va_start(ap, cmd);
  int r = do_fcntl(fd, cmd, ap);
  va_end(ap);
  return r;
}

/* ---- data ---- */

static void log_write(struct tracked* t, int fd, int64_t start, int64_t end, int64_t offset, const struct iovec* iov,
                      int n, uint64_t bytes, int dsync) {
  struct tank_rec_header h = {0};
  h.kind = TANK_REC_WRITE;
  h.flags = (uint16_t)(t->dsync || dsync ? TANK_REC_DSYNC : 0);
  h.fd = fd;
  h.start_ns = start;
  h.end_ns = end;
  h.dev = t->dev;
  h.ino = t->ino;
  h.offset = offset;
  h.length = bytes;
  emit(&h, t->path, NULL, iov, n, bytes);
}

/* After write/writev: where the bytes went (the position moved past them; O_APPEND included). */
static int64_t offset_before(int fd, ssize_t written) { return (int64_t)lseek64(fd, 0, SEEK_CUR) - written; }

ssize_t write(int fd, const void* buf, size_t n) {
  ensure_init();
  struct tracked* t = lookup(fd);
  if (t == NULL) return real_write(fd, buf, n);
  int64_t s = now_ns();
  ssize_t r = real_write(fd, buf, n);
  int64_t e = now_ns();
  if (r > 0) {
    int saved = errno;
    struct iovec v = {(void*)buf, (size_t)r};
    log_write(t, fd, s, e, offset_before(fd, r), &v, 1, (uint64_t)r, 0);
    errno = saved;
  }
  return r;
}

static ssize_t do_pwrite(int fd, const void* buf, size_t n, off64_t off) {
  ensure_init();
  struct tracked* t = lookup(fd);
  if (t == NULL) return real_pwrite64(fd, buf, n, off);
  int64_t s = now_ns();
  ssize_t r = real_pwrite64(fd, buf, n, off);
  int64_t e = now_ns();
  if (r > 0) {
    int saved = errno;
    struct iovec v = {(void*)buf, (size_t)r};
    log_write(t, fd, s, e, off, &v, 1, (uint64_t)r, 0);
    errno = saved;
  }
  return r;
}
ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) { return do_pwrite(fd, buf, n, off); }
ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t off) { return do_pwrite(fd, buf, n, off); }

ssize_t writev(int fd, const struct iovec* iov, int n) {
  ensure_init();
  struct tracked* t = lookup(fd);
  if (t == NULL) return real_writev(fd, iov, n);
  int64_t s = now_ns();
  ssize_t r = real_writev(fd, iov, n);
  int64_t e = now_ns();
  if (r > 0) {
    int saved = errno;
    log_write(t, fd, s, e, offset_before(fd, r), iov, n, (uint64_t)r, 0);
    errno = saved;
  }
  return r;
}

static ssize_t do_pwritev(int fd, const struct iovec* iov, int n, off64_t off, int flags, int v2) {
  ensure_init();
  struct tracked* t = lookup(fd);
  if (v2 && real_pwritev64v2 == NULL) {
    errno = ENOSYS;
    return -1;
  }
  int64_t s = now_ns();
  ssize_t r = v2 ? real_pwritev64v2(fd, iov, n, off, flags) : real_pwritev64(fd, iov, n, off);
  int64_t e = now_ns();
  if (t != NULL && r > 0) {
    int saved = errno;
    /* pwritev2 with offset -1 writes at the position, like writev. */
    int64_t at = (v2 && off == -1) ? offset_before(fd, r) : off;
    log_write(t, fd, s, e, at, iov, n, (uint64_t)r, v2 && (flags & (RWF_DSYNC | RWF_SYNC)));
    errno = saved;
  }
  return r;
}
ssize_t pwritev(int fd, const struct iovec* iov, int n, off_t off) { return do_pwritev(fd, iov, n, off, 0, 0); }
ssize_t pwritev64(int fd, const struct iovec* iov, int n, off64_t off) { return do_pwritev(fd, iov, n, off, 0, 0); }
ssize_t pwritev2(int fd, const struct iovec* iov, int n, off_t off, int flags) { return do_pwritev(fd, iov, n, off, flags, 1); }
ssize_t pwritev64v2(int fd, const struct iovec* iov, int n, off64_t off, int flags) {
  return do_pwritev(fd, iov, n, off, flags, 1);
}

static void log_size(int kind, struct tracked* t, const char* path, uint64_t dev, uint64_t ino, int fd, int64_t s,
                     int64_t e, int64_t offset, uint64_t length, int64_t mode) {
  struct tank_rec_header h = {0};
  h.kind = (uint16_t)kind;
  h.fd = fd;
  h.start_ns = s;
  h.end_ns = e;
  h.dev = t ? t->dev : dev;
  h.ino = t ? t->ino : ino;
  h.offset = offset;
  h.length = length;
  h.result = mode;
  emit(&h, t ? t->path : path, NULL, NULL, 0, 0);
}

static int do_ftruncate(int fd, off64_t size) {
  ensure_init();
  struct tracked* t = lookup(fd);
  int64_t s = now_ns();
  int r = real_ftruncate64(fd, size);
  int64_t e = now_ns();
  if (t != NULL && r == 0) log_size(TANK_REC_TRUNCATE, t, NULL, 0, 0, fd, s, e, size, 0, 0);
  return r;
}
int ftruncate(int fd, off_t size) { return do_ftruncate(fd, size); }
int ftruncate64(int fd, off64_t size) { return do_ftruncate(fd, size); }

static int do_truncate(const char* path, off64_t size) {
  char abs[PATH_MAX];
  if (!recorded(AT_FDCWD, path, abs)) return real_truncate64(path, size);
  int64_t s = now_ns();
  int r = real_truncate64(path, size);
  int64_t e = now_ns();
  struct stat st;
  if (r == 0 && stat(path, &st) == 0) {
    log_size(TANK_REC_TRUNCATE, NULL, abs, (uint64_t)st.st_dev, (uint64_t)st.st_ino, -1, s, e, size, 0, 0);
  }
  return r;
}
int truncate(const char* path, off_t size) { return do_truncate(path, size); }
int truncate64(const char* path, off64_t size) { return do_truncate(path, size); }

static int do_fallocate(int fd, int mode, off64_t off, off64_t len, int posix) {
  ensure_init();
  struct tracked* t = lookup(fd);
  int64_t s = now_ns();
  int r = posix ? real_posix_fallocate64(fd, off, len) : real_fallocate64(fd, mode, off, len);
  int64_t e = now_ns();
  if (t != NULL && r == 0) log_size(TANK_REC_FALLOCATE, t, NULL, 0, 0, fd, s, e, off, (uint64_t)len, mode);
  return r;
}
int fallocate(int fd, int mode, off_t off, off_t len) { return do_fallocate(fd, mode, off, len, 0); }
int fallocate64(int fd, int mode, off64_t off, off64_t len) { return do_fallocate(fd, mode, off, len, 0); }
int posix_fallocate(int fd, off_t off, off_t len) { return do_fallocate(fd, 0, off, len, 1); }
int posix_fallocate64(int fd, off64_t off, off64_t len) { return do_fallocate(fd, 0, off, len, 1); }

/* ---- syncs ---- */

static int do_sync(int fd, int datasync) {
  ensure_init();
  struct tracked* t = lookup(fd);
  if (t != NULL && t->skip_sync) return 0;  /* the self-test's broken program */
  int64_t s = now_ns();
  int r = datasync ? real_fdatasync(fd) : real_fsync(fd);
  int64_t e = now_ns();
  if (t != NULL && r == 0) {
    int saved = errno;
    struct tank_rec_header h = {0};
    h.kind = TANK_REC_SYNC;
    h.flags = (uint16_t)((datasync ? TANK_REC_DATASYNC : 0) | (t->is_dir ? TANK_REC_DIR : 0));
    h.fd = fd;
    h.start_ns = s;
    h.end_ns = e;
    h.dev = t->dev;
    h.ino = t->ino;
    emit(&h, t->path, NULL, NULL, 0, 0);
    errno = saved;
  }
  return r;
}
int fsync(int fd) { return do_sync(fd, 0); }
int fdatasync(int fd) { return do_sync(fd, 1); }

int sync_file_range(int fd, off64_t off, off64_t len, unsigned flags) {
  ensure_init();
  struct tracked* t = lookup(fd);
  int64_t s = now_ns();
  int r = real_sync_file_range(fd, off, len, flags);
  int64_t e = now_ns();
  if (t != NULL && r == 0) log_size(TANK_REC_SYNC_RANGE, t, NULL, 0, 0, fd, s, e, off, (uint64_t)len, flags);
  return r;
}

static void log_sync_all(int fd, int64_t s, int64_t e) {
  struct tank_rec_header h = {0};
  h.kind = TANK_REC_SYNC_ALL;
  h.fd = fd;
  h.start_ns = s;
  h.end_ns = e;
  emit(&h, g_root, NULL, NULL, 0, 0);
}

int syncfs(int fd) {
  ensure_init();
  int64_t s = now_ns();
  int r = real_syncfs(fd);
  int64_t e = now_ns();
  /* Assumed to be the recorded tree's file system (the tree lies on one). */
  if (r == 0 && g_active) log_sync_all(fd, s, e);
  return r;
}

void sync(void) {
  ensure_init();
  int64_t s = now_ns();
  real_sync();
  int64_t e = now_ns();
  if (g_active) log_sync_all(-1, s, e);
}

/* ---- directory entries ---- */

static void log_entry(int kind, int64_t s, int64_t e, const char* path, const char* path2) {
  struct tank_rec_header h = {0};
  h.kind = (uint16_t)kind;
  h.fd = -1;
  h.start_ns = s;
  h.end_ns = e;
  emit(&h, path, path2, NULL, 0, 0);
}

static int do_rename(int olddir, const char* from, int newdir, const char* to, unsigned flags, int v2) {
  char a[PATH_MAX], b[PATH_MAX];
  ensure_init();
  int ra = recorded(olddir, from, a);
  int rb = recorded(newdir, to, b);
  if ((ra || rb) && (flags & RENAME_EXCHANGE)) die("renameat2(RENAME_EXCHANGE) of a recorded file is not modelled");
  int64_t s = now_ns();
  int r;
  if (v2) {
    if (real_renameat2 == NULL) {
      errno = ENOSYS;
      return -1;
    }
    r = real_renameat2(olddir, from, newdir, to, flags);
  } else {
    r = real_renameat(olddir, from, newdir, to);
  }
  int64_t e = now_ns();
  if (r == 0 && (ra || rb)) {
    int saved = errno;
    if (!ra) a[0] = '\0';  /* moved in from outside: reported with an empty source */
    if (!rb) b[0] = '\0';
    log_entry(TANK_REC_RENAME, s, e, a, b);
    errno = saved;
  }
  return r;
}
int rename(const char* from, const char* to) { return do_rename(AT_FDCWD, from, AT_FDCWD, to, 0, 0); }
int renameat(int od, const char* from, int nd, const char* to) { return do_rename(od, from, nd, to, 0, 0); }
int renameat2(int od, const char* from, int nd, const char* to, unsigned flags) {
  return do_rename(od, from, nd, to, flags, 1);
}

static int do_unlinkat(int dirfd, const char* path, int flags) {
  char abs[PATH_MAX];
  if (!recorded(dirfd, path, abs)) return real_unlinkat(dirfd, path, flags);
  int64_t s = now_ns();
  int r = real_unlinkat(dirfd, path, flags);
  int64_t e = now_ns();
  if (r == 0) {
    int saved = errno;
    log_entry((flags & AT_REMOVEDIR) ? TANK_REC_RMDIR : TANK_REC_UNLINK, s, e, abs, NULL);
    errno = saved;
  }
  return r;
}
int unlink(const char* path) { return do_unlinkat(AT_FDCWD, path, 0); }
int unlinkat(int dirfd, const char* path, int flags) { return do_unlinkat(dirfd, path, flags); }
int rmdir(const char* path) { return do_unlinkat(AT_FDCWD, path, AT_REMOVEDIR); }
int remove(const char* path) {
  ensure_init();
  struct stat st;
  int dir = lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
  return do_unlinkat(AT_FDCWD, path, dir ? AT_REMOVEDIR : 0);
}

static int do_mkdirat(int dirfd, const char* path, mode_t mode) {
  char abs[PATH_MAX];
  if (!recorded(dirfd, path, abs)) return real_mkdirat(dirfd, path, mode);
  int64_t s = now_ns();
  int r = real_mkdirat(dirfd, path, mode);
  int64_t e = now_ns();
  if (r == 0) {
    int saved = errno;
    log_entry(TANK_REC_MKDIR, s, e, abs, NULL);
    errno = saved;
  }
  return r;
}
int mkdir(const char* path, mode_t mode) { return do_mkdirat(AT_FDCWD, path, mode); }
int mkdirat(int dirfd, const char* path, mode_t mode) { return do_mkdirat(dirfd, path, mode); }

/* ---- mappings ---- */

static void* do_mmap(void* addr, size_t len, int prot, int flags, int fd, off64_t off) {
  ensure_init();
  if ((flags & MAP_SHARED) && (prot & PROT_WRITE)) {
    struct tracked* t = lookup(fd);
    if (t != NULL) {
      char msg[PATH_MAX + 100];
      snprintf(msg, sizeof msg, "%s is mapped shared and writable: the power-cut model cannot see such writes", t->path);
      die(msg);
    }
  }
  return real_mmap64(addr, len, prot, flags, fd, off);
}
void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) { return do_mmap(addr, len, prot, flags, fd, off); }
void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off64_t off) {
  return do_mmap(addr, len, prot, flags, fd, off);
}
