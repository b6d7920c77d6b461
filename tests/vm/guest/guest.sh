#!/bin/sh
# Runs inside the VM (tests/vm/README.md), as root, started by tank-vm-runner.service once the
# system is up; its output goes to the virtio console, which the host reads. The payload (this
# script, params, probe, loadgen, the packages) is in /opt/tank-vm; files for the host go to
# /opt/tank-vm/out, written at the end as a tar onto the third disk (/dev/vdc).
#
# params sets PHASE:
#   scenario  install the package as a user does and check what systemd does with it: notify,
#             reload, watchdog, hardening, journal priorities, upgrade, purge; then install it
#             again with the power-cut configuration (fsync = $MODE) for the cuts that follow.
#             With LOAD=1 it then runs the load of power cut 0 (CUT=0), below.
#   cut       (each boot of the power-cut series) wait for tank (started by systemd at boot, after
#             the cut), list the ids in its queue for the host's verdict, switch to fsync = $MODE
#             (RESET=1: with an empty queue), then, unless FINAL=1, run the load of cut $CUT
#             (loadgen, acknowledgements to /dev/vdd) until the host kills the VM.
# Lines the host reads: "CHECK ok|FAIL <name>: <detail>", "MEASURE <name> <value>",
# "RESULTS WRITTEN", "LOAD RUNNING", "DONE failures=<n>".
set -u
P=/opt/tank-vm
OUT=$P/out
mkdir -p "$OUT"
. "$P/params"
failures=0
ok() { echo "CHECK ok $*"; }
fail() { echo "CHECK FAIL $*"; failures=$((failures + 1)); }
# expect <name> <detail> <command...>: ok when the command succeeds.
expect() {
  name=$1 detail=$2
  shift 2
  if "$@"; then ok "$name: $detail"; else fail "$name: $detail"; fi
}
step() { echo "STEP [$(cut -d' ' -f1 /proc/uptime)s] $*"; }
mainpid() { systemctl show -p MainPID --value tank; }
metric() { curl -s http://127.0.0.1:9464/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
# wait_for <seconds> <command...>
wait_for() {
  n=$(($1 * 10))
  shift
  while [ $n -gt 0 ]; do
    "$@" && return 0
    sleep 0.1
    n=$((n - 1))
  done
  return 1
}
finish() {
  journalctl -b --no-pager -o short-monotonic >"$OUT/journal.txt" 2>&1 || true
  echo "$failures" >"$OUT/failures"
  tar -C "$OUT" -cf - . | dd of=/dev/vdc bs=1M conv=fsync status=none
  echo "RESULTS WRITTEN"
}
echo "MEASURE guest_uptime_at_runner $(cut -d' ' -f1 /proc/uptime)"

# The configuration of the checks below: the package's own (HTTP in, archive out) with short
# timeouts, so a stuck thread is seen in 1 s.
write_config() {
  cat >/etc/tank/tank.toml <<EOF
# edited by tests/vm
[agent]
data_dir = "\${STATE_DIRECTORY:-/var/lib/tank}"
stall_timeout = "1s"

[queue]
mode = "disk"
max_disk_bytes = "${1:-256MiB}"
fsync = "${2:-interval}"
fsync_interval = "200ms"
overflow = "block"

[metrics]
listen = "127.0.0.1:9464"

[[inputs.http]]
name = "local"
listen = "127.0.0.1:9880"
EOF
  if [ "${3:-archive}" = archive ]; then
    cat >>/etc/tank/tank.toml <<EOF

[[outputs.file]]
name = "archive"
directory = "\${STATE_DIRECTORY:-/var/lib/tank}/archive"
max_file_bytes = "16MiB"
max_files = 8
EOF
  fi
  # As an editor does (vim, nano): a file written without a sync can be empty after a power cut
  # (ext4's delayed allocation), and the cuts below come seconds after this.
  sync
}
# Drop-ins of tank.service (/etc/systemd/system/tank.service.d/<name>.conf); each change is
# followed by one `systemctl daemon-reload`, which takes seconds under TCG.
dropin() { mkdir -p /etc/systemd/system/tank.service.d; printf '[Service]\n%s\n' "$2" >"/etc/systemd/system/tank.service.d/$1.conf"; }
undrop() { rm -f "/etc/systemd/system/tank.service.d/$1.conf"; }
invocation() { systemctl show -p InvocationID --value tank; }
restarts() { systemctl show -p NRestarts --value tank; }
restarted() { [ "$(restarts)" -ge 1 ]; }
new_process() { systemctl -q is-active tank && [ "$(mainpid)" != "$1" ]; }
reloads_applied() { [ "$(metric 'tank_reloads_total{result="applied"}')" = "$1" ]; }
journal_of() { journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID="$1"; }

scenario() {
  # --- install -----------------------------------------------------------------------------
  step "dpkg -i $(basename "$P"/tank_a.deb)"
  expect install "dpkg -i exits 0" dpkg -i "$P/tank_a.deb"
  expect install "the unit is enabled" systemctl -q is-enabled tank
  expect install "postinst started it: active" systemctl -q is-active tank
  expect install "/usr/bin/tank runs" /usr/bin/tank version

  # --- start: active only after READY=1 ------------------------------------------------------
  # Type=notify: `systemctl start` returns once tank said READY=1, which it says only when its
  # inputs listen and /readyz answers 200. So both must hold the moment start returns, without a
  # retry; and systemd must have taken tank's STATUS= (sent with READY=1). The same checks on a
  # Type=simple unit (a drop-in) must fail: the control shows the check can tell them apart.
  ready_at_start() {
    systemctl stop tank
    systemctl start tank || return 1
    curl -sf -o /dev/null http://127.0.0.1:9464/readyz && curl -s -o /dev/null -d '{"at":"start"}' http://127.0.0.1:9880/
  }
  step "systemctl start (Type=notify)"
  expect notify "right after \`systemctl start\` returned, /readyz is 200 and ingest answers" ready_at_start
  expect notify "StatusText is tank's own STATUS=running (sd_notify reached systemd)" \
    test "$(systemctl show -p StatusText --value tank)" = running
  t_exec=$(systemctl show -p ExecMainStartTimestampMonotonic --value tank)
  t_active=$(systemctl show -p ActiveEnterTimestampMonotonic --value tank)
  echo "MEASURE start_to_ready_ms $(( (t_active - t_exec) / 1000 ))"
  step "control: Type=simple"
  dropin simple 'Type=simple'
  systemctl daemon-reload
  if ready_at_start; then fail "notify: control: with Type=simple the same check fails"; else ok "notify: control: with Type=simple the same check fails"; fi
  undrop simple
  systemctl daemon-reload
  systemctl restart tank

  # --- reload --------------------------------------------------------------------------------
  step "reload: a good file, then a bad one"
  write_config
  pid=$(mainpid)
  expect reload "systemctl reload with a valid file exits 0" systemctl reload tank
  expect reload "applied (tank_reloads_total{result=\"applied\"} 1)" wait_for 10 reloads_applied 1
  expect reload "same process" test "$(mainpid)" = "$pid"
  cp /etc/tank/tank.toml /tmp/good.toml
  sed -i 's/^fsync_interval = /fsync_intervall = /' /etc/tank/tank.toml
  if systemctl reload tank 2>"$OUT/reload-bad.err"; then fail "reload: a bad file is refused"; else ok "reload: a bad file is refused (exit status non-zero)"; fi
  systemctl status --no-pager -n 20 tank >"$OUT/status-after-bad-reload.txt" 2>&1
  line=$(grep -n '^fsync_intervall' /etc/tank/tank.toml | cut -d: -f1)
  expect reload "systemctl status shows the error with its place (tank.toml:$line:1, fsync_intervall)" \
    grep -q "tank.toml:$line:1: .*fsync_intervall" "$OUT/status-after-bad-reload.txt"
  expect reload "tank runs on, same process, nothing applied" \
    test "$(systemctl is-active tank) $(mainpid)" = "active $pid" -a "$(metric 'tank_reloads_total{result="applied"}')" = 1
  cp /tmp/good.toml /etc/tank/tank.toml

  # --- watchdog, and the probe of the hardening in the same start --------------------------------
  # The probe runs as ExecStartPre= of the unit: tank's user, tank's sandbox (guest/probe.c).
  step "watchdog: output.send hangs (failpoint), WatchdogSec=4s; the probe as ExecStartPre="
  dropin watchdog 'Environment=TANK_FAILPOINTS=output.send=1:hang
WatchdogSec=4s'
  dropin probe "ExecStartPre=$P/probe"
  systemctl daemon-reload
  systemctl restart tank
  inv=$(invocation)
  pid=$(mainpid)
  journal_of "$inv" | grep '^probe ' >"$OUT/probe-unit.txt"
  curl -s -o /dev/null -d '{"watchdog":1}' http://127.0.0.1:9880/
  expect watchdog "systemd restarted tank (NRestarts 1) within 30 s" wait_for 30 restarted
  expect watchdog "a new process" wait_for 20 new_process "$pid"
  journal_of "$inv" >"$OUT/watchdog-tank.txt"
  journalctl --no-pager -o cat -u tank >"$OUT/watchdog-unit.txt"
  expect watchdog "tank said which thread was stuck" grep -q 'stuck: "output archive sender 0"' "$OUT/watchdog-tank.txt"
  expect watchdog "the journal says why systemd killed it: Watchdog timeout" grep -q 'Watchdog timeout (limit 4s)' "$OUT/watchdog-unit.txt"

  # --- hardening -----------------------------------------------------------------------------
  expected="probe write_state ok
probe write_etc EROFS
probe write_conf EACCES
probe write_usr EROFS
probe write_var EROFS
probe chown_own EPERM
probe setpriority EPERM
probe affinity EPERM
probe mmap_wx EPERM
probe netlink EAFNOSUPPORT
probe userns EPERM"
  step "hardening: what the probe saw in tank's sandbox"
  echo "$expected" | while read -r _ what want; do
    got=$(awk -v w="$what" '$2 == w { print $3 }' "$OUT/probe-unit.txt")
    if [ "$got" = "$want" ]; then echo "CHECK ok hardening: $what -> $got"; else echo "CHECK FAIL hardening: $what -> ${got:-nothing} (expected $want)"; fi
  done | tee "$OUT/hardening-checks.txt"
  failures=$((failures + $(grep -c 'CHECK FAIL' "$OUT/hardening-checks.txt")))
  # Control: with the directives the probe stands for switched off, every line but the state
  # directory's and the configuration directory's (its owner's doing) must change.
  step "control: the probe with the hardening dropped"
  undrop watchdog
  # (Not ProtectSystem=no: DynamicUser=yes implies ProtectSystem=strict. ReadWritePaths= lifts
  # the read-only mounts where the probe writes; the dynamic user's lack of permission stays.)
  dropin weak 'ReadWritePaths=/etc /usr/local /var/lib
SystemCallFilter=
MemoryDenyWriteExecute=no
RestrictAddressFamilies=
RestrictNamespaces=no'
  systemctl daemon-reload
  systemctl restart tank
  journal_of "$(invocation)" | grep '^probe ' >"$OUT/probe-weak.txt"
  systemd-analyze security --no-pager tank.service >"$OUT/security-weak.txt" 2>&1
  same=$(echo "$expected" | grep -v -e write_state -e write_conf | grep -cxF -f - "$OUT/probe-weak.txt")
  expect hardening "control: without the directives no probe line is as expected ($same of 9 still are)" test "$same" -eq 0
  weak=$(sed -n 's/.*Overall exposure level for tank.service: \([0-9.]*\).*/\1/p' "$OUT/security-weak.txt")
  echo "MEASURE security_exposure_weakened $weak"
  undrop weak
  undrop probe
  systemctl daemon-reload
  systemctl restart tank
  status=/proc/$(mainpid)/status
  expect hardening "tank itself: NoNewPrivs 1, Seccomp 2 (filter), no effective capabilities, not root" \
    sh -c "grep -q '^NoNewPrivs:[[:space:]]*1' $status && grep -q '^Seccomp:[[:space:]]*2' $status && grep -q '^CapEff:[[:space:]]*0*$' $status && ! grep -q '^Uid:[[:space:]]*0[[:space:]]' $status"
  systemd-analyze security --no-pager tank.service >"$OUT/security.txt" 2>&1
  score=$(sed -n 's/.*Overall exposure level for tank.service: \([0-9.]*\).*/\1/p' "$OUT/security.txt")
  echo "MEASURE security_exposure $score"

  # --- journal priorities ----------------------------------------------------------------------
  step "journal priorities"
  journalctl --no-pager -u tank -o verbose >"$OUT/journal-tank-verbose.txt"
  expect journal "info lines are priority 6 (\"running: agent id\")" \
    sh -c "journalctl --no-pager -u tank -p info..info -o cat | grep -q 'running: agent id'"
  expect journal "info lines are not in -p warning" \
    sh -c "! journalctl --no-pager -u tank -p warning -o cat | grep -q 'running: agent id'"
  expect journal "warnings are priority 4 (the failpoint's)" \
    sh -c "journalctl --no-pager -u tank -p warning..warning -o cat | grep -q 'failpoint \"output.send\" reached'"
  expect journal "errors are priority 3 (the stuck thread)" \
    sh -c "journalctl --no-pager -u tank -p err..err -o cat | grep -q 'stuck: \"output archive sender 0\"'"
  # What the sandbox must not block: reading the clock's state (agent.clock, clock_adjtime).
  expect hardening "tank can read the kernel's clock state under the unit (no \"cannot read the kernel's clock state\")" \
    sh -c "! journalctl --no-pager -u tank -o cat | grep -q \"cannot read the kernel's clock state\""
  expect journal "no <N> prefix is left in a message" \
    sh -c "! journalctl --no-pager -u tank -o cat | grep -q '^<[0-7]>'"

  # --- upgrade keeps the edited conffile ------------------------------------------------------
  step "upgrade to $(dpkg-deb -f "$P/tank_b.deb" Version)"
  curl -s -o /dev/null -d '{"before":"upgrade"}' http://127.0.0.1:9880/
  pid=$(mainpid)
  sum=$(md5sum </etc/tank/tank.toml)
  inode=$(stat -c %i /var/lib/private/tank/queue/data.mdb)
  expect upgrade "dpkg -i --force-confold of the newer package exits 0" dpkg -i --force-confold "$P/tank_b.deb"
  expect upgrade "the version is the new one" test "$(dpkg-query -W -f '${Version}' tank)" = "$(dpkg-deb -f "$P/tank_b.deb" Version)"
  expect upgrade "the edited /etc/tank/tank.toml is kept" test "$(md5sum </etc/tank/tank.toml)" = "$sum"
  expect upgrade "the package's new one is beside it (tank.toml.dpkg-dist)" test -e /etc/tank/tank.toml.dpkg-dist
  expect upgrade "tank was restarted with the new binary" wait_for 20 new_process "$pid"
  expect upgrade "on the same queue" test "$(stat -c %i /var/lib/private/tank/queue/data.mdb)" = "$inode"

  # --- purge -----------------------------------------------------------------------------------
  step "purge"
  expect purge "dpkg -P tank exits 0" dpkg -P tank
  for path in /usr/bin/tank /etc/tank /var/lib/tank /var/lib/private/tank /lib/systemd/system/tank.service \
    /etc/systemd/system/multi-user.target.wants/tank.service /etc/systemd/system/tank.service \
    /var/lib/systemd/deb-systemd-helper-enabled/tank.service.dsh-also \
    /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/tank.service; do
    expect purge "$path is gone" test ! -e "$path" -a ! -L "$path"
  done
  expect purge "no tank process" sh -c '! pidof tank'
  expect purge "systemd knows no tank.service" sh -c "systemctl show -p LoadState --value tank | grep -qx not-found"
  expect purge "dpkg knows no tank" sh -c "! dpkg-query -W -f '\${Status}' tank 2>/dev/null | grep -q installed"
  rm -rf /etc/systemd/system/tank.service.d

  # --- ready for the power cuts ------------------------------------------------------------------
  step "install again for the power cuts (fsync = $MODE)"
  mkdir -p /etc/tank
  write_config 256MiB "$MODE" none
  expect install "dpkg -i --force-confold with a configuration in place" dpkg -i --force-confold "$P/tank_b.deb"
  expect install "active with fsync = $MODE" systemctl -q is-active tank
}

power_cut_boot() {
  step "boot after power cut $((CUT - 1))"
  expect boot "tank was started by systemd at boot and is active" wait_for 300 systemctl -q is-active tank
  t_active=$(systemctl show -p ActiveEnterTimestampMonotonic --value tank)
  echo "MEASURE boot_to_ready_ms $((t_active / 1000))"
  journalctl -b --no-pager -o cat -u tank >"$OUT/tank-boot.txt"
  # Its configuration survived the cut (written with a sync): it listens where the load goes.
  expect boot "tank listens on 127.0.0.1:9880 (its configuration survived the cut)" \
    grep -q 'listening on http://127.0.0.1:9880/' "$OUT/tank-boot.txt"
  /usr/bin/tank queue peek 100000000 -c /etc/tank/tank.toml | sed -n 's/.*{"id":"\([^"]*\)".*/\1/p' >"$OUT/ids.txt"
  echo "MEASURE queue_records $(wc -l <"$OUT/ids.txt")"
  /usr/bin/tank queue verify -c /etc/tank/tank.toml >"$OUT/verify.txt" 2>&1
  expect queue "tank queue verify passes" test $? -eq 0
  if [ "$RESET" = 1 ]; then
    step "fsync = $MODE from here, on an empty queue"
    systemctl stop tank
    rm -rf /var/lib/private/tank/queue /var/lib/private/tank/run.json
    write_config 256MiB "$MODE" none
    systemctl start tank
    expect queue "fresh queue with fsync = $MODE" systemctl -q is-active tank
  fi
}

# load: the power-cut load until the host kills the VM (acknowledgements on /dev/vdd, which the
# host gives each boot empty).
load() {
  step "load (fsync = $MODE); the host cuts the power at a random moment"
  exec "$P/loadgen" 9880 /dev/vdd "c$CUT" "$PER_REQUEST"
}

case "$PHASE" in
  scenario)
    scenario
    finish
    echo "DONE failures=$failures"
    [ "${LOAD:-0}" = 1 ] && load
    ;;
  cut)
    power_cut_boot
    finish
    echo "DONE failures=$failures"
    [ "$FINAL" = 1 ] || load
    ;;
  *) echo "unknown PHASE $PHASE"; finish; echo "DONE failures=1" ;;
esac
