/* The recorder's log format (tests/powerloss): shared by recorder.c, which appends it, and
 * trace.cpp, which reads it.
 *
 * A log is a sequence of entries, each appended with ONE writev(2) to a file opened with
 * O_APPEND, so entries of concurrent threads and processes never interleave. A kill -9 can cut
 * the last entry short; its trailer then does not match and the reader stops before it.
 *
 *   struct tank_rec_header | path bytes | path2 bytes | data bytes | u32 trailer
 *
 * trailer = TANK_REC_TRAILER ^ total. Paths are absolute and not NUL-terminated. Integers are in
 * the machine's byte order: a log is read on the machine that wrote it. */
#ifndef TANK_POWERLOSS_RECORD_FORMAT_H
#define TANK_POWERLOSS_RECORD_FORMAT_H

#include <stdint.h>

#define TANK_REC_MAGIC 0x31524b54u   /* "TKR1" */
#define TANK_REC_TRAILER 0x444e4554u /* "TEND" */

enum tank_rec_kind {
  TANK_REC_BEGIN = 1,     /* a process started recording; path = the recorded directory */
  TANK_REC_OPEN = 2,      /* path opened; flags CREATED / TRUNCATED / DIR / DSYNC */
  TANK_REC_WRITE = 3,     /* data written at offset (pwrite, write, writev, pwritev...) */
  TANK_REC_TRUNCATE = 4,  /* the file's size set to offset (ftruncate, truncate) */
  TANK_REC_FALLOCATE = 5, /* offset, length = the range; mode in `result` */
  TANK_REC_SYNC = 6,      /* fsync / fdatasync (flag DATASYNC) of the file or directory (DIR) */
  TANK_REC_SYNC_RANGE = 7,/* sync_file_range: no durability promise (see crash_state.hpp) */
  TANK_REC_SYNC_ALL = 8,  /* sync(), syncfs() */
  TANK_REC_MKDIR = 9,
  TANK_REC_RENAME = 10,   /* path -> path2 */
  TANK_REC_UNLINK = 11,
  TANK_REC_RMDIR = 12
};

enum tank_rec_flags {
  TANK_REC_CREATED = 1,   /* OPEN: the call created the file */
  TANK_REC_TRUNCATED = 2, /* OPEN: O_TRUNC on a file that existed */
  TANK_REC_DIR = 4,       /* the descriptor is a directory */
  TANK_REC_DSYNC = 8,     /* WRITE through an O_DSYNC / O_SYNC descriptor: durable when it returns */
  TANK_REC_DATASYNC = 16  /* SYNC: fdatasync rather than fsync */
};

struct tank_rec_header {
  uint32_t magic;
  uint32_t total; /* bytes of the entry, header and trailer included */
  uint16_t kind;
  uint16_t flags;
  uint32_t pid;
  uint32_t tid;
  int32_t fd;
  int64_t start_ns; /* CLOCK_MONOTONIC before the call */
  int64_t end_ns;   /* CLOCK_MONOTONIC after it returned */
  uint64_t dev;     /* the file's device and inode (0 for directory-entry operations) */
  uint64_t ino;
  int64_t offset;
  uint64_t length;  /* data bytes that follow the paths (WRITE), or the range (FALLOCATE) */
  int64_t result;   /* FALLOCATE: its mode */
  uint32_t path_len;
  uint32_t path2_len;
};

#endif
