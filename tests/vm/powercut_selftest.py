"""Check 11's accounting (powercut.account) on made-up runs, so that the
check is seen to fail: a clean run of two boots passes, and each loss the
contract does not allow (a reading missing inside a boot, a tail lost
further back than the contract's window, a number reused with other
content, no unclean stop after a cut, a second epoch, a spool that did not
open cleanly) must be reported. Runs without qemu (scripts/test):

    python3 tests/vm/powercut_selftest.py
"""
import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import powercut as pc  # noqa: E402

T0 = 1_800_000_000_000  # guest ms of boot 0's first reading
CUT_AFTER = 49  # boot 0's last env1 number; then the cut


def run():
    """A clean made-up run: boot 0 (spill) cut 300 ms after its last
    reading, boot 1 resumes where boot 0 stopped and ends cleanly."""
    boots = [
        {"policy": "spill", "t_host": 0.0, "cut": None, "scenario": "outage (spill writes)",
         "journal": "started", "boot_id": "b0"},
        {"policy": "spill", "t_host": 100.0, "cut": None, "scenario": "clean stop",
         "journal": "started", "boot_id": "b1"},
    ]
    msgs = []
    last = {}
    for d, ms in pc.DEVICES.items():
        n0 = CUT_AFTER * 200 // ms  # boot 0 reads as long for each device
        last[d] = n0
        for s in range(0, 2 * (n0 + 1)):
            boot = 0 if s <= n0 else 1
            ts = T0 + s * ms + (5_000 if boot else 0)
            body = {"device": d, "epoch": "e1",
                    "samples": [{"seq": s, "ts": ts, "values": {"ambient.temperature": 20.0 + s}}]}
            msgs.append((boots[boot]["t_host"] + 1 + s / 1000, f"ioc/{pc.SITE}/{d}/telemetry",
                         json.dumps(body)))
    boots[0]["cut"] = T0 + CUT_AFTER * 200 + 300
    values = {f"seq_resumed.{d}.samples": float(n + 1) for d, n in last.items()}
    ev = {"device": "gateway", "events": [{"code": "gateway.unclean_stop", "values": values}]}
    msgs.append((100.5, f"ioc/{pc.SITE}/gateway/event", json.dumps(ev)))
    msgs.sort(key=lambda m: m[0])
    return boots, msgs


def account(boots, msgs):
    probs = []
    pc.account(boots, msgs, pc.records(msgs), probs)
    return probs


def without(msgs, device, seqs):
    out = []
    for m in msgs:
        if m[1] == f"ioc/{pc.SITE}/{device}/telemetry" and json.loads(m[2])["samples"][0]["seq"] in seqs:
            continue
        out.append(m)
    return out


def main():
    failures = []

    def expect(name, probs, words):
        ok = any(words in p for p in probs) if words else not probs
        print(f"{'ok' if ok else 'WRONG'}: {name}: {probs[:2] if probs else 'PASS'}")
        if not ok:
            failures.append(name)

    boots, msgs = run()
    expect("a clean run passes", account(boots, msgs), None)
    # A tail within the contract's window (spill: 3 s + one interval + slack).
    expect("a tail lost within the window passes",
           account(boots, without(msgs, "env1", set(range(40, CUT_AFTER + 1)))), None)
    expect("a reading missing inside a boot fails",
           account(boots, without(msgs, "env1", {60})), "missing inside the boot")
    expect("a tail lost beyond the window fails",
           account(boots, without(msgs, "env1", set(range(20, CUT_AFTER + 1)))),
           "before the cut, more than the contract's")
    dup = list(msgs)
    body = json.loads(dup[0][2])
    body["samples"][0]["values"]["ambient.temperature"] = -1.0
    dup.append((dup[0][0] + 0.01, dup[0][1], json.dumps(body)))
    expect("a number reused with other content fails", account(boots, dup), "seq reused")
    expect("no unclean stop after a cut fails",
           account(boots, [m for m in msgs if "unclean_stop" not in m[2]]), "no gateway.unclean_stop")
    two = [(t, tp, p.replace('"epoch": "e1"', '"epoch": "e2"') if t > 100 else p) for t, tp, p in msgs]
    expect("a second epoch fails", account(boots, two), "2 epochs")
    bad = copy.deepcopy(boots)
    bad[1]["journal"] = "spool.db is corrupt: moved aside"
    expect("a spool that did not open cleanly fails", account(bad, msgs), "did not open cleanly")
    if failures:
        print(f"powercut self-test: {len(failures)} WRONG: {failures}")
        sys.exit(1)
    print("powercut self-test: all as expected")


if __name__ == "__main__":
    main()
