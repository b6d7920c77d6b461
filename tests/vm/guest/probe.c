/* Is tank's sandbox in force? Run by the guest as an ExecStartPre= of tank.service (a drop-in), so
 * it runs as tank's dynamic user in exactly tank's sandbox (tests/vm/guest/guest.sh). Prints one
 * line per attempt, "probe <what> <outcome>", outcome "ok" or the errno's name, and always
 * exits 0 (tank starts after it); the guest compares the lines with what the unit promises:
 *
 *   write_state     create a file in $STATE_DIRECTORY           ok
 *   write_etc       create a file in /etc                       EROFS (ProtectSystem=strict; without it EACCES)
 *   write_conf      create a file in /etc/tank                  EACCES (ConfigurationDirectory= is root's, 0755)
 *   write_usr       create a file in /usr/local                 EROFS
 *   write_var       create a file in /var/lib                   EROFS
 *   chown_own       fchown a file it owns to its own ids        EPERM (SystemCallFilter=~@privileged)
 *   setpriority     lower its own priority (nice 19)            EPERM (SystemCallFilter=~@resources)
 *   affinity        pin itself to the CPUs it has               EPERM (~@resources)
 *   mmap_wx         map memory writable and executable          EPERM (MemoryDenyWriteExecute=yes)
 *   netlink         open an AF_NETLINK socket                   EAFNOSUPPORT (RestrictAddressFamilies=)
 *   userns          unshare(CLONE_NEWUSER)                      EPERM (RestrictNamespaces=yes)
 *   status          NoNewPrivs, Seccomp and CapEff of /proc/self/status
 *
 * Each of these is allowed to an unprivileged process without the directive named: what the
 * probe sees is the directive, not the missing privilege. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static const char* name(int e) {
  switch (e) {
    case EROFS: return "EROFS";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EINVAL: return "EINVAL";
    case ENOSYS: return "ENOSYS";
    default: return strerror(e);
  }
}

static void report(const char* what, int rc) { printf("probe %s %s\n", what, rc == 0 ? "ok" : name(errno)); }

static int create(const char* dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tank-vm-probe", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  close(fd);
  unlink(path);
  return 0;
}

int main(void) {
  const char* state = getenv("STATE_DIRECTORY");
  report("write_state", state ? create(state) : (errno = ENOENT, -1));
  report("write_etc", create("/etc"));
  report("write_conf", create("/etc/tank"));
  report("write_usr", create("/usr/local"));
  report("write_var", create("/var/lib"));

  char own[4096];
  snprintf(own, sizeof own, "%s/tank-vm-probe-own", state ? state : "/tmp");
  int fd = open(own, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  report("chown_own", fd < 0 ? -1 : fchown(fd, getuid(), getgid()));
  if (fd >= 0) close(fd);
  unlink(own);

  report("setpriority", setpriority(PRIO_PROCESS, 0, 19));
  /* Not setrlimit: glibc calls prlimit64, which @system-service allows (it also reads limits). */
  cpu_set_t cpus;
  sched_getaffinity(0, sizeof cpus, &cpus);
  report("affinity", sched_setaffinity(0, sizeof cpus, &cpus));
  void* p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  report("mmap_wx", p == MAP_FAILED ? -1 : 0);
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0);
  report("netlink", s < 0 ? -1 : 0);
  if (s >= 0) close(s);
  report("userns", unshare(CLONE_NEWUSER));

  FILE* f = fopen("/proc/self/status", "r");
  char line[256];
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, "NoNewPrivs:", 11) == 0 || strncmp(line, "Seccomp:", 8) == 0 || strncmp(line, "CapEff:", 7) == 0) {
      line[strcspn(line, "\n")] = '\0';
      for (char* c = line; *c; ++c)
        if (*c == '\t' || *c == ':') *c = ' ';
      printf("probe status %s\n", line);
    }
  }
  if (f) fclose(f);
  fflush(stdout);
  return 0;
}
