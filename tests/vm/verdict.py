#!/usr/bin/env python3
"""The verdict of one virtual power cut (tests/vm/run.sh).

Reads the acknowledgements the guest's loadgen wrote to the ack disk before the cut (one 512-byte
sector per request tank answered with 200: tests/vm/guest/loadgen.c) and the ids in tank's queue
after the next boot (`tank queue peek`), and checks the promise of the power-loss issue:

  always    every acknowledged record is in the queue;
  interval  the records missing are all among the newest acknowledged: each was acknowledged
            at most WINDOW before the last acknowledgement the disk holds (the cut came after
            it), and every record that was in the queue at the previous verification of the
            same mode is still there ("never the backlog");
  never     nothing is promised; the loss is reported.

For every mode the records present must form, per cut, a prefix of the acknowledged ones with no
hole (a hole would be a lost commit behind a durable one). Prints one line; exit 1 on a failed
verdict. --state keeps the ids in the queue now for the next verification (--previous).
"""
import argparse
import json
import struct
import sys

WINDOW_NS = {"interval": 200_000_000 + 1_000_000_000}  # fsync_interval + one flush under TCG


def fnv1a(data):
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def read_acks(path):
    acks = []
    with open(path, "rb") as f:
        while True:
            sector = f.read(512)
            if len(sector) < 512 or sector[:8] != b"TANKACK1":
                break
            request, first, count, t_ns, check = struct.unpack_from("<QQQQQ", sector, 8)
            if check != fnv1a(sector[:40]) or request != len(acks):
                break
            acks.append((first, count, t_ns))
    return acks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True)
    ap.add_argument("--acks", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--state", required=True, help="where to keep the ids present now")
    ap.add_argument("--previous", help="the --state of the previous verification of the same mode")
    ap.add_argument("--name", required=True)
    ap.add_argument("--drop-first", action="store_true",
                    help="control: take the first acknowledged record out of the queue's list")
    a = ap.parse_args()

    acks = read_acks(a.acks)
    with open(a.ids) as f:
        present = set(line.strip() for line in f if line.strip())
    problems = []
    if a.drop_first and acks:
        present.discard(f"{a.prefix}-{acks[0][0]}")
    acked = [(f"{a.prefix}-{first + i}", t) for first, count, t in acks for i in range(count)]
    lost = [(rid, t) for rid, t in acked if rid not in present]
    if not acked:
        problems.append("no acknowledgement before the cut (the load never ran?)")
    # Present records of this cut form a prefix of the acknowledged ones (no hole).
    first_lost = next((i for i, (rid, _) in enumerate(acked) if rid not in present), len(acked))
    holes = sum(1 for rid, _ in acked[first_lost:] if rid in present)
    # Records beyond the last acknowledgement may be there too (committed, the 200 not yet sent
    # or not yet written to the ack disk): allowed.
    window_ms = 0.0
    if lost:
        window_ms = (acked[-1][1] - lost[0][1]) / 1e6
    if a.mode == "always" and lost:
        problems.append(f"{len(lost)} acknowledged records lost with fsync = always (first {lost[0][0]})")
    if a.mode == "interval" and lost and acked[-1][1] - lost[0][1] > WINDOW_NS["interval"]:
        problems.append(f"lost records acknowledged {window_ms:.0f} ms before the last acknowledgement "
                        f"(allowed {WINDOW_NS['interval'] / 1e6:.0f} ms)")
    if holes and a.mode != "never":
        problems.append(f"{holes} records present after the first lost one ({acked[first_lost][0]}): a hole")
    # Never the backlog: what the previous verification of this mode saw is still there.
    state = {"present": []}
    if a.previous:
        with open(a.previous) as f:
            state = json.load(f)
    gone = [rid for rid in state["present"] if rid not in present]
    if gone and a.mode != "never":
        problems.append(f"{len(gone)} records of earlier cuts (the backlog) are gone (first {gone[0]})")
    with open(a.state, "w") as f:
        json.dump({"present": sorted(present)}, f)

    verdict = "ok" if not problems else "FAIL"
    print(f"CHECK {verdict} power cut {a.name} (fsync = {a.mode}): acknowledged {len(acked)} records in "
          f"{len(acks)} requests, lost {len(lost)}"
          + (f" (acknowledged within the last {window_ms:.0f} ms before the cut)" if lost else "")
          + f", backlog {len(state['present'])} kept {len(state['present']) - len(gone)}, queue now {len(present)}"
          + ("" if not problems else "; " + "; ".join(problems)))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
