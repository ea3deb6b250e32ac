"""Check 11 of scripts/test-vm-arm64: power cuts, for real. Killing qemu
drops the guest's page cache and everything in flight exactly as pulling
the Pi's plug does. The packaged gateway (a disk of its own, provisioned
from the card on the first boot) reads two simulated sensors fast; each
boot it goes through a broker outage (the guest's link down), and qemu is
killed at a random moment: while the readings spill to the card, or while
the backlog drains after the link came back (commits happen throughout).
Then the machine boots again. The first half of the cuts run
`spool.policy = "spill"`, the second half `"wal"`. After the last cut one
more boot drains everything and powers off cleanly.

Counted from the broker's side with the contract's own rules
(docs/mqtt.md, "Ordering, duplicates and gaps"):
  - no (device, kind, epoch, seq) arrives twice with different content;
  - one epoch throughout, no gateway.sequence_reset after the first boot,
    and the spool opens on every boot (no spool.corrupt, nothing moved
    aside in the journal);
  - every boot after a cut publishes gateway.unclean_stop with a boot id
    that changed, and its seq_resumed.* is where each stream goes on;
  - within each boot's numbers (from where it resumed to the last number
    received from it) nothing is missing;
  - what a cut may lose is the tail: the newest readings that were not on
    the card yet. The last reading received from a cut boot must have been
    taken no earlier than spool.spill_after + spool.commit_interval
    (policy spill) or spool.commit_interval (wal) before the cut, plus one
    reading interval and the agent's reaction time (SLACK_MS);
  - the final boot, stopped cleanly, loses nothing: every number of it
    arrives.

The cut's moment is the guest's own wall clock read just before qemu is
killed (the readings' ts come from the same clock).
"""

import json
import os
import random
import time

import vmtest as v

SITE = "vm-cut"
DEVICES = {"env1": 200, "env2": 500}  # interval, ms
SPILL_AFTER_MS, COMMIT_MS = 2000, 1000
# The guest read its clock, then the host killed qemu: the readings of that
# moment may be lost too (an agent round trip under emulation).
SLACK_MS = 1500
# The final boot's backlog counts as drained at this spool.depth: about
# two commit intervals of readings of both devices.
DRAINED = 2 * sum(1000 // ms for ms in DEVICES.values())


def toml(policy):
    devices = "".join(
        f'[[device]]\nid = "{d}"\ntype = "sim"\nprofile = "sensor"\ninterval = "{ms}ms"\n'
        for d, ms in DEVICES.items())
    return f"""site = "{SITE}"
[mqtt]
host = "10.0.2.100"
port = 1883
tls = false
allow_plaintext_credentials = true
username = "{v.MQTT_USER}"
password_file = "/etc/wardgate/mqtt.password"
[spool]
path = "/var/lib/wardgate/spool.db"
policy = "{policy}"
spill_after = "{SPILL_AFTER_MS}ms"
commit_interval = "{COMMIT_MS}ms"
[gateway]
telemetry_interval = "5s"
{devices}"""


def records(msgs):
    """(device, epoch, seq) -> list of sample bodies as sent."""
    out = {}
    for _, tp, p in msgs:
        if not tp.startswith(f"ioc/{SITE}/") or not tp.endswith("/telemetry"):
            continue
        try:
            body = json.loads(p)
        except ValueError:
            continue
        for s in body.get("samples", []):
            if isinstance(s.get("seq"), (int, float)):
                out.setdefault((body.get("device"), body.get("epoch"), int(s["seq"])), []).append(s)
    return out


def gateway_events(msgs, code):
    return [e for _, d, e in v.events([m for m in msgs if m[1].startswith(f"ioc/{SITE}/")])
            if e.get("code") == code]


def spool_depth(payload):
    try:
        return json.loads(payload)["samples"][-1]["values"].get("spool.depth")
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def guest_ms(agent):
    rc, out = agent.sh("date +%s%3N", timeout=30)
    try:
        return int(out.strip())
    except ValueError:
        return None


def run(args, broker, cuts, seed=None):
    seed = seed if seed is not None else random.randrange(1 << 30)
    rnd = random.Random(seed)
    v.say(f"[cuts] {cuts} power cuts (seed {seed})")
    disk = os.path.join(args.work, "disk-cut.img")
    v.make_disk(disk, args.root, {"wardgate.toml": toml("spill"),
                                  "wardgate-mqtt.password": v.MQTT_PASS + "\n"})
    boots = []  # per boot: dict(policy, boot_id, t_host, cut_guest_ms, scenario, journal)
    probs = []
    try:
        for i in range(cuts + 1):
            last = i == cuts
            policy = "spill" if i < (cuts + 1) // 2 else "wal"
            vm = v.Vm(args, args.work, disk, broker, f"cut{i}")
            b = {"policy": policy, "t_host": time.monotonic(), "cut": None, "scenario": "clean stop"}
            boots.append(b)
            try:
                if not vm.boot():
                    probs.append(f"boot {i} did not come up")
                    break
                a = vm.agent
                live = broker.wait(b["t_host"], lambda m: m[1] == f"ioc/{SITE}/env1/telemetry"
                                   and '"historical":false' in m[2], 180)
                if not live:
                    probs.append(f"boot {i}: no live env1 reading")
                    break
                _, bid = a.sh("cat /proc/sys/kernel/random/boot_id")
                b["boot_id"] = bid.strip()
                _, ifname = a.sh("ls /sys/class/net | grep -v '^lo$' | head -1")
                ifname = ifname.strip()
                if last:
                    # Drain the backlog, then a clean stop. Under "wal"
                    # every reading waits on the card until the broker has
                    # it, so the depth is rarely 0 while the devices read:
                    # drained is what one commit interval of readings
                    # leaves (DRAINED).
                    a.sh(f"networkctl up {ifname}")
                    t = time.monotonic()
                    deadline = t + 300
                    depth = None
                    while time.monotonic() < deadline:
                        tel = broker.since(t, f"ioc/{SITE}/gateway/telemetry")
                        depth = spool_depth(tel[-1][2]) if tel else None
                        if depth is not None and depth <= DRAINED:
                            break
                        time.sleep(2)
                    else:
                        probs.append(f"the final boot did not drain its backlog within 300 s (spool.depth {depth})")
                    _, b["journal"] = a.sh("journalctl -b -u wardgate --no-pager -o cat")
                    t_off = time.monotonic()
                    vm.poweroff()
                    if not broker.wait(t_off, lambda m: m[1] == f"ioc/{SITE}/status"
                                       and '"reason":"shutdown"' in m[2], 30):
                        probs.append("no offline status at the final clean poweroff")
                    break
                # The next boot's policy is set now; it takes effect there.
                nxt = "spill" if i + 1 < (cuts + 1) // 2 else "wal"
                a.sh(f"sed -i 's/^policy = .*/policy = \"{nxt}\"/' /etc/wardgate/wardgate.toml")
                time.sleep(rnd.uniform(1, 4))
                a.sh(f"networkctl down {ifname}")
                if i % 2 == 0:
                    b["scenario"] = "outage (spill writes)"
                    time.sleep(rnd.uniform(2, 12))
                else:
                    b["scenario"] = "drain"
                    time.sleep(8)
                    a.sh(f"networkctl up {ifname}")
                    time.sleep(rnd.uniform(0.2, 6))
                _, b["journal"] = a.sh("journalctl -b -u wardgate --no-pager -o cat", timeout=60)
                b["cut"] = guest_ms(a)
                vm.proc.kill()
                vm.proc.wait()
                b["t_cut_host"] = time.monotonic()
            finally:
                vm.kill()
    finally:
        if os.path.exists(disk):
            os.unlink(disk)
    time.sleep(3)
    with open(os.path.join(args.work, "cuts.json"), "w") as f:
        json.dump({"seed": seed, "boots": boots}, f, indent=1)
    msgs = broker.since(boots[0]["t_host"]) if boots else []
    recs = records(msgs)
    figures = account(boots, msgs, recs, probs)
    v.check(11, f"power cuts ({cuts}, seed {seed})", not probs,
            "; ".join(probs[:8]) + (f" (+{len(probs) - 8} more)" if len(probs) > 8 else "") or figures)


def account(boots, msgs, recs, probs):
    epochs = {e for (_, e, _) in recs}
    if len(epochs) != 1:
        probs.append(f"{len(epochs)} epochs: {sorted(epochs)}")
    resets = gateway_events([m for m in msgs if m[0] > boots[0]["t_host"] + 1], "gateway.sequence_reset")
    if len(resets) > 1:
        probs.append(f"{len(resets)} gateway.sequence_reset events (one at the first start at most)")
    reused = [k for k, bodies in recs.items()
              if len({json.dumps({x: y for x, y in b.items() if x != "historical"}, sort_keys=True)
                      for b in bodies}) > 1]
    if reused:
        probs.append(f"seq reused with other content: {reused[:5]}")
    for i, b in enumerate(boots):
        j = b.get("journal") or ""
        bad = [l for l in j.splitlines() if "corrupt" in l.lower() or "moved aside" in l.lower()]
        if bad:
            probs.append(f"boot {i}: the spool did not open cleanly: {bad[0][:160]!r}")
    corrupt = gateway_events(msgs, "spool.corrupt")
    if corrupt:
        probs.append(f"spool.corrupt events: {corrupt[:2]}")
    # Where each boot's streams resumed: its unclean_stop (boots after a cut).
    unclean = []
    for t, tp, p in msgs:
        if tp == f"ioc/{SITE}/gateway/event" and '"gateway.unclean_stop"' in p:
            for e in json.loads(p).get("events", []):
                if e.get("code") == "gateway.unclean_stop":
                    unclean.append((t, e))
    resumed = []  # per boot: {device: seq_resumed}
    for i, b in enumerate(boots):
        end = boots[i + 1]["t_host"] if i + 1 < len(boots) else float("inf")
        mine = [e for t, e in unclean if b["t_host"] <= t < end]
        if i == 0:
            resumed.append({d: 0 for d in DEVICES})
            continue
        if not mine:
            probs.append(f"boot {i}: no gateway.unclean_stop after the cut")
            resumed.append(None)
            continue
        vals = mine[0].get("values", {})
        if any(k.startswith("seq_last_used.") for k in vals):
            probs.append(f"boot {i}: seq_last_used after a power cut (the boot id changed)")
        # Values are JSON numbers (8.0): sequence numbers are whole.
        resumed.append({d: None if vals.get(f"seq_resumed.{d}.samples") is None
                        else int(vals[f"seq_resumed.{d}.samples"]) for d in DEVICES})
    if len({b.get("boot_id") for b in boots}) != len(boots):
        probs.append("a boot id repeated: the cuts did not reboot the kernel")
    readings = sum(1 for k in recs if k[0] in DEVICES)
    ts_of = {(dev, s): bodies[0].get("ts", 0) for (dev, _, s), bodies in recs.items()}
    lost_tail, allowed_tail = 0, 0
    per_cut = []
    for d, interval in DEVICES.items():
        got = sorted(s for (dev, _, s) in recs if dev == d)
        for i, b in enumerate(boots):
            if resumed[i] is None or resumed[i].get(d) is None:
                continue
            lo = resumed[i][d]
            hi_next = next((r[d] for r in resumed[i + 1:] if r and r.get(d) is not None), None)
            mine = [s for s in got if s >= lo and (hi_next is None or s < hi_next)]
            if not mine:
                probs.append(f"boot {i} {d}: no reading received from it")
                continue
            holes = sorted(set(range(lo, mine[-1] + 1)) - set(mine))
            if holes:
                probs.append(f"boot {i} {d}: {len(holes)} reading(s) missing inside the boot: {holes[:8]}")
            if b["cut"] is None:
                continue
            last_ts = ts_of[(d, mine[-1])]
            window = (SPILL_AFTER_MS + COMMIT_MS if b["policy"] == "spill" else COMMIT_MS)
            allowed_ms = window + interval + SLACK_MS
            behind = b["cut"] - last_ts
            n_allowed = allowed_ms // interval + 1
            n_lost = max(0, behind // interval)
            lost_tail += n_lost
            allowed_tail += n_allowed
            per_cut.append(f"{i}:{d}:{b['policy']}:{b['scenario'].split()[0]}:{behind}ms")
            if behind > allowed_ms:
                probs.append(f"boot {i} ({b['policy']}, {b['scenario']}) {d}: the last reading received was "
                             f"taken {behind} ms before the cut, more than the contract's {window} ms "
                             f"(+ {interval} ms interval + {SLACK_MS} ms slack)")
    opened = sum(1 for b in boots if b.get("journal") is not None)
    return (f"{len(boots) - 1} cuts ({sum(1 for b in boots if b['policy'] == 'spill' and b['cut'])} spill, "
            f"{sum(1 for b in boots if b['policy'] == 'wal' and b['cut'])} wal), {len(boots)} boots, "
            f"spool opened cleanly {opened}/{len(boots)}, one epoch; {readings} readings received, "
            f"none missing inside a boot, tail lost at the cuts about {lost_tail} readings "
            f"(contract allows {allowed_tail}); last reading before each cut: {', '.join(per_cut)}")
