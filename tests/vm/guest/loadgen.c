/* The load of the virtual power cuts (tests/vm/README.md), run inside the guest:
 *
 *   loadgen <port> <ack device> <id prefix> <records per request>
 *
 * POSTs NDJSON records {"id":"<prefix>-<n>",...} to tank's HTTP input on 127.0.0.1:<port>, one
 * request at a time, for ever. Each request tank answers with 200 (its acknowledgement: the
 * records are committed) is then written to the ack device as one 512-byte sector, opened with
 * O_DSYNC, so the write has reached the host's file when it returns: the host kills the VM at any
 * moment and still reads every acknowledgement that was made, and only those. A request that gets
 * anything else (503 when the queue is full, a refused connection while tank restarts) is sent
 * again, with the same records, and is not written. Without a first acknowledgement within about
 * a minute it gives up (exit 1).
 *
 * Sector layout (little-endian): "TANKACK1", u64 request number (0, 1, ...), u64 first record
 * number, u32 record count, u32 zero, u64 CLOCK_BOOTTIME at the 200 in ns, u64 FNV-1a of the 40
 * bytes before it; the rest zero. Prints "LOAD RUNNING" after the first acknowledgement.
 * Static, C only: the same source for the amd64 and the arm64 guest. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t fnv1a(const unsigned char* p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

static void put64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = (unsigned char)(v >> (8 * i));
}

/* One POST; returns the HTTP status, or -1 when the connection failed. */
static int post(int port, const char* body, size_t len) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr*)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  char head[256];
  int hn = snprintf(head, sizeof head,
                    "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                    len);
  if (write(fd, head, (size_t)hn) != hn || write(fd, body, len) != (ssize_t)len) {
    close(fd);
    return -1;
  }
  char reply[512];
  size_t got = 0;
  while (got < sizeof reply - 1) {
    ssize_t r = read(fd, reply + got, sizeof reply - 1 - got);
    if (r <= 0) break;
    got += (size_t)r;
    if (memchr(reply, '\n', got) != NULL) break;  /* the status line is all we need */
  }
  close(fd);
  reply[got] = '\0';
  int status = -1;
  if (sscanf(reply, "HTTP/1.%*d %d", &status) != 1) return -1;
  return status;
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s <port> <ack device> <id prefix> <records per request>\n", argv[0]);
    return 2;
  }
  const int port = atoi(argv[1]);
  const char* prefix = argv[3];
  const int per_request = atoi(argv[4]);
  int ack = open(argv[2], O_WRONLY | O_DSYNC | O_CLOEXEC);
  if (ack < 0) {
    perror(argv[2]);
    return 1;
  }
  size_t cap = (size_t)per_request * 128 + 64;
  char* body = malloc(cap);
  uint64_t request = 0, next = 0;
  unsigned failures = 0;
  for (;;) {
    size_t len = 0;
    for (int i = 0; i < per_request; ++i)
      len += (size_t)snprintf(body + len, cap - len,
                              "{\"id\":\"%s-%llu\",\"n\":%llu,\"pad\":\"power cut under load, ext4, LMDB\"}\n",
                              prefix, (unsigned long long)(next + (uint64_t)i), (unsigned long long)(next + (uint64_t)i));
    int status = post(port, body, len);
    if (status != 200) {
      if (++failures % 100 == 1) printf("loadgen: request %llu: %s %d (sent again)\n", (unsigned long long)request,
                                        status < 0 ? "no answer" : "status", status);
      fflush(stdout);
      /* Nothing ever acknowledged for a minute: tank is not there; end, so the VM powers off. */
      if (request == 0 && failures >= 3000) {
        printf("loadgen: no acknowledgement in 60 s; giving up\n");
        return 1;
      }
      usleep(20000);
      continue;
    }
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    unsigned char sector[512] = {0};
    memcpy(sector, "TANKACK1", 8);
    put64(sector + 8, request);
    put64(sector + 16, next);
    put64(sector + 24, (uint64_t)per_request);
    put64(sector + 32, (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec);
    put64(sector + 40, fnv1a(sector, 40));
    if (pwrite(ack, sector, sizeof sector, (off_t)(request * 512)) != (ssize_t)sizeof sector) {
      perror("ack device");
      return 1;
    }
    if (request == 0) {
      printf("LOAD RUNNING\n");
      fflush(stdout);
    }
    ++request;
    next += (uint64_t)per_request;
  }
}
