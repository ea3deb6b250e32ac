#!/usr/bin/env python3
"""wardgate's idle cost on a ward's everyday workload (scripts/bench --idle).

The workload: one Modbus RTU bus (a pseudo-terminal pair from socat) with
an XY-MD02 temperature/humidity sensor and an SDM120 energy meter served
by tests/peers/modbus_peer.py (pymodbus), each polled every second; the
gateway's defaults otherwise (the local page, the Pi's own health, the
command listener, the spool), its status LED driven into a stand-in sysfs
directory as on a Pi; QoS 1 to a local mosquitto. After a warm-up, the
gateway process is sampled from /proc once a second for a window:

  RSS          median of VmRSS over the window (and Anonymous/file-backed
               from smaps_rollup at the end)
  CPU          utime+stime over the window, per 1,000 messages the broker
               received from the gateway, and as % of one core
  wake-ups/s   voluntary context switches per second, summed over the
               process's threads (a thread that went to sleep and was
               woken: timers, I/O, futexes) -- the steady figure
  per thread   the same, by thread name

Usage:
  scripts/bench --idle [--seconds S] [--warmup S] [--windows N]
                       [--bin PATH ...] [--guard]

With several --bin, the builds are measured in turn in each window
(A B A B ...), on one running bus and broker, so they are compared side by
side. --nodered DIR adds Node-RED to the turns, for the same work: DIR
holds node_modules with node-red and node-red-contrib-modbus 5.23.3 (the
last release whose dependencies are all on the npm registry); the flow
(written here) reads the same registers of the same two slaves every
second, one request per block as wardgate does, and publishes one JSON
message per device and second to the same broker with QoS 1. --guard compares the first build's figures with
scripts/lib/idle-limits.json and exits 1 when RSS or wake-ups/s are past
their limit (CPU and wall time are printed, never judged: at a fraction of a
percent of a core they vary from run to run more than any change does).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(cond, what, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    sys.exit(f"idle bench: {what} did not come up in {timeout:.0f} s")


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Peers:
    """mosquitto, the socat pty pair and the Modbus peer, shared by every
    build measured in a run."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.mqtt_port = free_port()
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\n"
                    "persistence false\nmax_queued_messages 100000\n")
        self.start(["mosquitto", "-c", conf])
        wait_for(lambda: port_open(self.mqtt_port), "mosquitto")
        peer_end = os.path.join(tmp, "bus-peer")
        self.bus = os.path.join(tmp, "bus-gateway")
        self.start(["socat", f"pty,raw,echo=0,link={peer_end}",
                    f"pty,raw,echo=0,link={self.bus}"])
        wait_for(lambda: os.path.exists(peer_end) and os.path.exists(self.bus), "socat pty pair")
        peer = self.start([sys.executable, os.path.join(ROOT, "tests/peers/modbus_peer.py"),
                           "rtu", peer_end], stdout=subprocess.PIPE)
        line = peer.stdout.readline().decode().strip()
        if not line.startswith("ready"):
            sys.exit(f"idle bench: the Modbus peer did not start ({line!r})")
        # Counts what the broker delivers from the gateways (QoS 1 both ways).
        self.received = 0
        self.lock = threading.Lock()
        sub = self.start(["mosquitto_sub", "-p", str(self.mqtt_port), "-q", "1",
                          "-t", "idle/#", "-v"], stdout=subprocess.PIPE)
        threading.Thread(target=self.count, args=(sub,), daemon=True).start()

    def start(self, argv, stdout=subprocess.DEVNULL):
        p = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def count(self, sub):
        for _ in sub.stdout:
            with self.lock:
                self.received += 1

    def messages(self):
        with self.lock:
            return self.received

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def gateway_config(tmp, n, peers):
    """The ward's config: the two Modbus devices, everything else default
    but the paths and ports a test machine needs."""
    d = os.path.join(tmp, f"gw{n}")
    led = os.path.join(d, "led")
    os.makedirs(led, exist_ok=True)
    with open(os.path.join(led, "trigger"), "w") as f:
        f.write("none [mmc0] heartbeat\n")
    with open(os.path.join(led, "brightness"), "w") as f:
        f.write("0\n")
    web = free_port()
    cfg = os.path.join(d, "wardgate.toml")
    with open(cfg, "w") as f:
        f.write(f"""site = "idle{n}"

[mqtt]
host = "127.0.0.1"
port = {peers.mqtt_port}
prefix = "idle"

[spool]
path = "{d}/spool"

[web]
listen = "127.0.0.1:{web}"

[led]
backend = "sysfs"
path = "{led}"

[[device]]
id = "room"
type = "modbus"
serial = "{peers.bus}"
profile = "xy-md02"
baud = 9600
interval = "1s"

[[device]]
id = "meter"
type = "modbus"
serial = "{peers.bus}"
profile = "sdm120"
unit = 2
baud = 9600
interval = "1s"
""")
    return cfg, d


def read_status(pid):
    """VmRSS in KiB, and per-thread (name, voluntary, involuntary) by tid."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            vol = invol = 0
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol = int(line.split()[1])
            threads[tid] = (name, vol, invol)
        except OSError:
            pass  # the thread ended between listing and reading
    return rss, threads


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def mappings(pid):
    """Resident KiB by mapping (file name or [heap]/[stack]/anonymous),
    with the anonymous part of each."""
    rss, anon, cur = {}, {}, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and ":" not in head[0]:
                cur = head[5] if len(head) > 5 else "anonymous"
            elif head and head[0] == "Rss:":
                rss[cur] = rss.get(cur, 0) + int(head[1])
            elif head and head[0] == "Anonymous:":
                anon[cur] = anon.get(cur, 0) + int(head[1])
    return sorted(((v, anon.get(k, 0), k) for k, v in rss.items()), reverse=True)


def smaps(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("Rss:", "Anonymous:", "Private_Dirty:", "Shared_Clean:", "Private_Clean:"):
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


class Gateway:
    def __init__(self, binary, tmp, n, peers):
        self.binary = binary
        self.cfg, self.dir = gateway_config(tmp, n, peers)
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen([binary, "run", "--config", self.cfg],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, RUST_LOG="warn"))

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def nodered_flow(peers):
    """The flow: a serial client on the bus, a read node per register
    block, a function per device that turns registers into values, one
    MQTT publish per device and second."""
    blocks = [("room", 1, 1, 2)] + [
        ("meter", 2, adr, qty)
        for adr, qty in [(0, 2), (6, 2), (12, 2), (18, 2), (24, 2), (30, 2), (70, 6), (342, 2)]
    ]
    room = """const p = msg.payload;
msg.topic = 'idle/nodered/room/telemetry';
msg.payload = JSON.stringify({ts: Date.now(), values: {temperature: p[0] / 10, humidity: p[1] / 10}});
return msg;"""
    meter = """const v = context.get('v') || {};
const b = Buffer.alloc(msg.payload.length * 2);
msg.payload.forEach((r, i) => b.writeUInt16BE(r, i * 2));
for (let i = 0; i < b.length / 4; i++) v[msg.topic + '.' + i] = b.readFloatBE(i * 4);
context.set('v', v);
if (msg.topic !== 'meter342') return null;
msg.topic = 'idle/nodered/meter/telemetry';
msg.payload = JSON.stringify({ts: Date.now(), values: v});
return msg;"""
    nodes = [
        {"id": "tab", "type": "tab", "label": "idle"},
        {"id": "broker", "type": "mqtt-broker", "broker": "127.0.0.1", "port": str(peers.mqtt_port),
         "clientid": "nodered-idle", "protocolVersion": "4", "keepalive": "60", "cleansession": True},
        {"id": "bus", "type": "modbus-client", "clienttype": "simpleser", "bufferCommands": True,
         "serialPort": peers.bus, "serialType": "RTU-BUFFERD", "serialBaudrate": 9600, "serialDatabits": 8,
         "serialStopbits": 1, "serialParity": "none", "serialConnectionDelay": 100, "unit_id": 1,
         "commandDelay": 20, "clientTimeout": 1000, "reconnectOnTimeout": True, "reconnectTimeout": 2000,
         "parallelUnitIdsAllowed": False, "stateLogEnabled": False, "queueLogEnabled": False,
         "failureLogEnabled": True, "tcpHost": "127.0.0.1", "tcpPort": 502, "tcpType": "DEFAULT"},
        {"id": "f-room", "type": "function", "z": "tab", "func": room, "outputs": 1, "wires": [["out"]]},
        {"id": "f-meter", "type": "function", "z": "tab", "func": meter, "outputs": 1, "wires": [["out"]]},
        {"id": "out", "type": "mqtt out", "z": "tab", "broker": "broker", "qos": "1", "retain": "false",
         "topic": "", "wires": []},
    ]
    for i, (dev, unit, adr, qty) in enumerate(blocks):
        nodes.append({"id": f"r{i}", "type": "modbus-read", "z": "tab", "topic": f"{dev}{adr}",
                      "unitid": str(unit), "dataType": "InputRegister", "adr": str(adr),
                      "quantity": str(qty), "rate": "1", "rateUnit": "s", "delayOnStart": False,
                      "server": "bus", "showStatusActivities": False, "showErrors": True,
                      "wires": [[f"f-{dev}"], []]})
    return nodes


class NodeRed:
    """Node-RED with the flow above, measured like a gateway."""

    def __init__(self, home, tmp, peers):
        self.binary = "node-red"
        home = os.path.abspath(home)
        self.dir = os.path.join(tmp, "nodered")
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "flows.json"), "w") as f:
            json.dump(nodered_flow(peers), f)
        self.log = open(os.path.join(self.dir, "log"), "w")
        red = os.path.join(home, "node_modules", "node-red", "red.js")
        self.proc = subprocess.Popen(["node", red, "--userDir", self.dir, "--port", str(free_port()),
                                      "flows.json"], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, NODE_PATH=os.path.join(home, "node_modules")),
                                     cwd=home)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def window(gw, peers, seconds):
    """One measuring window over one running gateway."""
    pid = gw.proc.pid
    rss = []
    last = {}
    first = None
    t0 = time.monotonic()
    c0, m0 = cpu_ticks(pid), peers.messages()
    while True:
        r, threads = read_status(pid)
        rss.append(r)
        if first is None:
            first = threads
        last.update(threads)
        if time.monotonic() - t0 >= seconds:
            break
        time.sleep(1.0)
    dt = time.monotonic() - t0
    c1, m1 = cpu_ticks(pid), peers.messages()
    per_thread = {}
    for tid, (name, vol, invol) in last.items():
        v0, i0 = (first[tid][1], first[tid][2]) if tid in first else (0, 0)
        agg = per_thread.setdefault(name, [0, 0])
        agg[0] += vol - v0
        agg[1] += invol - i0
    msgs = m1 - m0
    cpu = (c1 - c0) / TICK
    return {
        "seconds": dt,
        "messages": msgs,
        "msgs_per_s": msgs / dt,
        "rss_kib": statistics.median(rss),
        "cpu_s": cpu,
        "cpu_s_per_1000": cpu / msgs * 1000 if msgs else float("nan"),
        "cpu_pct": cpu / dt * 100,
        "wakeups_per_s": sum(v for v, _ in per_thread.values()) / dt,
        "involuntary_per_s": sum(i for _, i in per_thread.values()) / dt,
        "threads": {k: (v / dt, i / dt) for k, (v, i) in per_thread.items()},
        "smaps": smaps(pid),
        "mappings": mappings(pid),
    }


def show(label, w, maps=False):
    s = w["smaps"]
    print(f"  {label}: RSS {w['rss_kib'] / 1024:.2f} MiB (anonymous {s.get('Anonymous', 0) / 1024:.2f}, "
          f"file-backed {(s.get('Rss', 0) - s.get('Anonymous', 0)) / 1024:.2f}); "
          f"CPU {w['cpu_s']:.2f} s = {w['cpu_s_per_1000']:.3f} s per 1,000 messages "
          f"({w['cpu_pct']:.2f} % of a core); {w['msgs_per_s']:.2f} messages/s; "
          f"wake-ups {w['wakeups_per_s']:.1f}/s (+{w['involuntary_per_s']:.1f}/s involuntary)")
    for name, (v, i) in sorted(w["threads"].items(), key=lambda kv: -kv[1][0]):
        if v + i >= 0.05:
            print(f"      {name:<16} {v:6.1f} wake-ups/s  {i:5.1f} involuntary/s")
    if maps:
        for rss, anon, name in w["mappings"][:12]:
            print(f"      {rss:7d} KiB resident ({anon:6d} anonymous)  {name}")


def label(b):
    return b if b == "node-red" else os.path.relpath(b, ROOT)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of a window (default 60)")
    ap.add_argument("--warmup", type=float, default=20.0, help="before the first window (default 20)")
    ap.add_argument("--windows", type=int, default=1, help="windows per build (default 1)")
    ap.add_argument("--bin", action="append", help="a wardgate binary (default target/release/wardgate)")
    ap.add_argument("--guard", action="store_true", help="exit 1 past scripts/lib/idle-limits.json")
    ap.add_argument("--nodered", metavar="DIR", help="also measure Node-RED from DIR/node_modules")
    ap.add_argument("--maps", action="store_true", help="print the resident set by mapping")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    bins = a.bin or [os.path.join(ROOT, "target/release/wardgate")]
    for b in bins:
        if not os.access(b, os.X_OK):
            sys.exit(f"idle bench: {b} is not an executable")
    for tool in ("mosquitto", "mosquitto_sub", "socat"):
        if not shutil.which(tool):
            sys.exit(f"idle bench: {tool} is needed")
    tmp = tempfile.mkdtemp(prefix="wardgate-idle-")
    peers = Peers(tmp)
    runs = list(bins) + (["node-red"] if a.nodered else [])
    results = {b: [] for b in runs}
    try:
        print(f"idle bench: 2 Modbus RTU devices polled every 1 s, QoS 1 to mosquitto; "
              f"warm-up {a.warmup:.0f} s, {a.windows} window(s) of {a.seconds:.0f} s per build")
        for k in range(a.windows):
            for n, b in enumerate(runs):
                # The builds take turns on the one bus: one gateway at a time.
                gw = NodeRed(a.nodered, tmp, peers) if b == "node-red" else Gateway(b, tmp, n, peers)
                time.sleep(a.warmup)
                if not gw.alive():
                    sys.exit(f"idle bench: {b} exited; its log: {gw.dir}/log")
                w = window(gw, peers, a.seconds)
                gw.stop()
                results[b].append(w)
                show(f"{label(b)} window {k + 1}", w, a.maps)
    finally:
        peers.stop()
    print("idle bench: medians")
    summary = {}
    for b, ws in results.items():
        m = {key: statistics.median(w[key] for w in ws)
             for key in ("rss_kib", "cpu_s_per_1000", "cpu_pct", "wakeups_per_s", "msgs_per_s")}
        summary[b] = m
        print(f"  {label(b)}: RSS {m['rss_kib'] / 1024:.2f} MiB, "
              f"{m['cpu_s_per_1000']:.3f} CPU s per 1,000 messages ({m['cpu_pct']:.2f} % of a core), "
              f"{m['wakeups_per_s']:.1f} wake-ups/s, {m['msgs_per_s']:.2f} messages/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": summary, "windows": results}, f, indent=1)
    shutil.rmtree(tmp, ignore_errors=True)
    if a.guard:
        with open(os.path.join(ROOT, "scripts/lib/idle-limits.json")) as f:
            lim = json.load(f)
        m = summary[bins[0]]
        bad = []
        if m["rss_kib"] / 1024 > lim["rss_mib"]:
            bad.append(f"RSS {m['rss_kib'] / 1024:.2f} MiB > {lim['rss_mib']} MiB")
        if m["wakeups_per_s"] > lim["wakeups_per_s"]:
            bad.append(f"{m['wakeups_per_s']:.1f} wake-ups/s > {lim['wakeups_per_s']}")
        if m["msgs_per_s"] < lim["min_msgs_per_s"]:
            bad.append(f"only {m['msgs_per_s']:.2f} messages/s (the workload did not run)")
        if bad:
            print("idle guard: FAIL: " + "; ".join(bad))
            sys.exit(1)
        print(f"idle guard: PASS (limits: RSS {lim['rss_mib']} MiB, {lim['wakeups_per_s']} wake-ups/s)")


if __name__ == "__main__":
    main()
