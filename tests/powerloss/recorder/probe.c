/* A program for the recorder's own test (recorder_test.cpp): makes, under the directory in
 * argv[1], every kind of call the recorder must see, in a known order, and a few it must not.
 *
 *   probe DIR basic    the calls listed in recorder_test.cpp, in that order
 *   probe DIR threads  two threads appending 2000 writes each (entries must not interleave)
 *   probe DIR mmap     a shared writable mapping of a recorded file (the recorder aborts)
 *
 * Exits 0 when every call succeeded, 1 with a message otherwise. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static const char* g_dir;

static void check(int ok, const char* what) {
  if (!ok) {
    perror(what);
    exit(1);
  }
}

static char* at(const char* name) {
  static char buf[4][4096];
  static int next;
  char* b = buf[next++ % 4];
  snprintf(b, sizeof buf[0], "%s/%s", g_dir, name);
  return b;
}

static void basic(void) {
  check(mkdir(at("d"), 0755) == 0, "mkdir");
  int fd = open(at("d/f"), O_RDWR | O_CREAT, 0644);
  check(fd >= 0, "open");
  check(pwrite(fd, "AAAA", 4, 0) == 4, "pwrite");
  check(lseek(fd, 4096, SEEK_SET) == 4096, "lseek");
  struct iovec v[2] = {{"BB", 2}, {"CC", 2}};
  check(writev(fd, v, 2) == 4, "writev");
  check(write(fd, "DD", 2) == 2, "write");
  int fd2 = dup(fd);
  check(pwrite(fd2, "E", 1, 10) == 1, "pwrite dup");
  int fd3 = fcntl(fd, F_DUPFD_CLOEXEC, 100);
  check(fd3 >= 100, "fcntl F_DUPFD_CLOEXEC");
  check(fdatasync(fd3) == 0, "fdatasync");
  struct iovec w[1] = {{"PV", 2}};
  check(pwritev(fd, w, 1, 30) == 2, "pwritev");
  check(close(fd) == 0 && close(fd2) == 0 && close(fd3) == 0, "close");
  check(pwrite(fd2, "X", 1, 0) < 0, "pwrite on a closed descriptor");  /* not recorded */
  int meta = open(at("d/f"), O_WRONLY | O_DSYNC);
  check(meta >= 0, "open O_DSYNC");
  check(pwrite(meta, "M", 1, 20) == 1, "pwrite O_DSYNC");
  check(ftruncate(meta, 8192) == 0, "ftruncate");
  check(fsync(meta) == 0, "fsync");
  close(meta);
  int dfd = open(at("d"), O_RDONLY | O_DIRECTORY);
  check(dfd >= 0, "open dir");
  check(fsync(dfd) == 0, "fsync dir");
  int rel = openat(dfd, "g", O_WRONLY | O_CREAT | O_TRUNC, 0644);  /* relative to a directory */
  check(rel >= 0, "openat");
  check(write(rel, "G", 1) == 1, "write g");
  close(rel);
  close(dfd);
  check(chdir(g_dir) == 0, "chdir");
  int cwd_rel = open("d/./../d/h", O_WRONLY | O_CREAT, 0644);  /* relative to the working directory */
  check(cwd_rel >= 0, "open relative");
  close(cwd_rel);
  check(rename(at("d/g"), at("d/g2")) == 0, "rename");
  check(unlink(at("d/h")) == 0, "unlink");
  int lock = open(at("d/lock.mdb"), O_RDWR | O_CREAT, 0644);  /* never recorded */
  check(lock >= 0 && pwrite(lock, "L", 1, 0) == 1, "lock.mdb");
  void* map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, lock, 0);
  check(ftruncate(lock, 4096) == 0 && map != MAP_FAILED, "mmap lock.mdb");
  close(lock);
  char outside[64];
  snprintf(outside, sizeof outside, "/tmp/tank-probe-outside-%d", (int)getpid());
  int out = open(outside, O_WRONLY | O_CREAT, 0644);  /* outside the directory: not recorded */
  check(out >= 0 && write(out, "O", 1) == 1, "outside");
  close(out);
  unlink(outside);
  check(remove(at("d/g2")) == 0, "remove");
  check(rmdir(at("d")) != 0, "rmdir of a directory that is not empty fails");  /* not recorded */
}

static void* appender(void* arg) {
  const char* name = arg;
  int fd = open(at(name), O_WRONLY | O_CREAT | O_APPEND, 0644);
  check(fd >= 0, "open");
  char line[64];
  for (int i = 0; i < 2000; ++i) {
    int n = snprintf(line, sizeof line, "%s %d\n", name, i);
    check(write(fd, line, (size_t)n) == n, "write");
  }
  close(fd);
  return NULL;
}

static void threads(void) {
  pthread_t a, b;
  pthread_create(&a, NULL, appender, "a");
  pthread_create(&b, NULL, appender, "b");
  pthread_join(a, NULL);
  pthread_join(b, NULL);
}

static void shared_map(void) {
  int fd = open(at("mapped"), O_RDWR | O_CREAT, 0644);
  check(fd >= 0 && ftruncate(fd, 4096) == 0, "open");
  void* map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  check(map != MAP_FAILED, "mmap");
  printf("mapped without the recorder noticing\n");
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: probe DIR basic|threads|mmap\n");
    return 2;
  }
  g_dir = argv[1];
  if (strcmp(argv[2], "basic") == 0) basic();
  else if (strcmp(argv[2], "threads") == 0) threads();
  else if (strcmp(argv[2], "mmap") == 0) shared_map();
  else return 2;
  return 0;
}
