#!/usr/bin/env python3
"""Host side of scripts/test-vm-arm64: boots the arm64 image under qemu and
runs the checks, printing one PASS/FAIL line each. Standard library only.

The guest is observed three ways: a command agent on a virtio-serial port
(tests/vm/guest/wardgate-vm-agent), the MQTT messages it publishes to a
mosquitto on the host's loopback (the only address its restricted user
network reaches, through a guestfwd), and the FAT boot partition read back
with mtools after poweroff. The serial console goes to a log file.

Three boots:
  A  fresh disk, a broken wardgate.toml on the card          -> check 5
  B  fresh disk, a good wardgate.toml + password on the card -> checks 1-4, 9, 7, 10, poweroff
  C  disk B again                                             -> checks 6, 8
  D  a fresh disk, booted again after each of --cuts power cuts -> check 11
     (tests/vm/powercut.py)

The machine's device tree is qemu's own with one node added: a gpio-leds
LED named ACT on the PL061 GPIO controller, so the guest has what a Pi has,
/sys/class/leds/ACT -> /sys/devices/platform/leds/leds/ACT, and the
packaged unit and udev rule are checked on the same path as on a Pi
(check 10). The guest's kernel clock starts unsynchronised (no NTP in the
VM); check 9 marks it synchronised as an NTP daemon would (adjtimex).
"""

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

# powercut.py (check 11) imports this file as `vmtest`: one module, one
# list of results, when it runs as the main program too.
sys.modules.setdefault("vmtest", sys.modules[__name__])

SITE = "vm-test"
MQTT_USER, MQTT_PASS = "wardgate-vm", "vm-secret-7f3a"
CHECKS = 10
LED = "/sys/class/leds/ACT"
TOOL = "/usr/local/sbin/wardgate-vm-tool"
OBS_USER, OBS_PASS = "observer", "observer-pw"
UPS_SERIAL = "WGVM0001"
UPS_INTERVAL = 5.0
BOOT_TIMEOUT = 600  # TCG on a busy 2-core machine: generous
CONFIRM_WITHIN = 20  # commands.confirm_within in the VM (check 7)

GOOD_TOML = f"""site = "{SITE}"
[mqtt]
host = "10.0.2.100"
port = 1883
tls = false
# The host's test broker behind qemu's guestfwd: plaintext on purpose.
allow_plaintext_credentials = true
username = "{MQTT_USER}"
password_file = "/etc/wardgate/mqtt.password"
[spool]
path = "/var/lib/wardgate/spool.db"
policy = "wal"
[gateway]
telemetry_interval = "10s"
# Check 7: config.set on the packaged service (opt-in, as a technician
# allows it). No trust_clock: check 9 synchronises the guest's clock
# first, and config.set is refused before that.
[commands]
allow = ["identify", "poll", "status", "config.set"]
confirm_within = "{CONFIRM_WITHIN}s"
[[device]]
id = "ups1"
type = "megatec"
serial = "/dev/wardgate-ups"
interval = "{int(UPS_INTERVAL)}s"
timeout = "2s"
[[device]]
id = "env1"
type = "sim"
profile = "sensor"
interval = "2s"
[[device]]
id = "denied"
type = "megatec"
serial = "/dev/virtio-ports/wardgate.denied"
interval = "5s"
"""

# mqtt.port out of range: the daemon and provisioning must both refuse it.
BAD_TOML = GOOD_TOML.replace("port = 1883", "port = 70000")

results = []


def say(msg):
    print(msg, flush=True)


def check(n, name, ok, detail):
    line = f"{'PASS' if ok else 'FAIL'} {n}. {name}: {detail}"
    results.append(ok)
    say(line)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# --- the broker and what it sees -------------------------------------------


class Broker:
    def __init__(self, work):
        self.port = free_port()
        pw = os.path.join(work, "mosquitto.passwd")
        open(pw, "w").close()
        run("mosquitto_passwd", "-b", pw, MQTT_USER, MQTT_PASS)
        run("mosquitto_passwd", "-b", pw, OBS_USER, OBS_PASS)
        os.chmod(pw, 0o644)
        conf = os.path.join(work, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(
                f"listener {self.port} 127.0.0.1\nallow_anonymous false\n"
                f"password_file {pw}\npersistence false\nuser root\n"
            )
        self.log = open(os.path.join(work, "mosquitto.log"), "w")
        self.proc = subprocess.Popen(["mosquitto", "-c", conf, "-v"], stdout=self.log, stderr=subprocess.STDOUT)
        self.msgs = []  # (host monotonic time, topic, payload)
        self.lock = threading.Lock()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sub = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-u", OBS_USER, "-P", OBS_PASS,
             "-q", "1", "-v", "-t", "ioc/#"],
            stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.sub.stdout:
            topic, _, payload = line.rstrip("\n").partition(" ")
            with self.lock:
                self.msgs.append((time.monotonic(), topic, payload))

    def since(self, t0, topic_suffix=None):
        with self.lock:
            return [(t, tp, p) for (t, tp, p) in self.msgs
                    if t >= t0 and (topic_suffix is None or tp.endswith(topic_suffix))]

    def wait(self, t0, pred, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.since(t0):
                if pred(m):
                    return m
            time.sleep(0.2)
        return None

    def publish(self, topic, payload):
        """Publishes as the IOC does (QoS 1), as the observer."""
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-u", OBS_USER,
                        "-P", OBS_PASS, "-q", "1", "-t", topic, "-s"],
                       input=payload.encode(), check=True, timeout=30)

    def stop(self, dump=None):
        if dump:
            with open(dump, "w") as f, self.lock:
                for t, tp, p in self.msgs:
                    f.write(f"{t:.3f} {tp} {p}\n")
        for p in (self.sub, self.proc):
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def events(msgs):
    """(time, device, event dict) of every event message."""
    out = []
    for t, tp, p in msgs:
        if tp.endswith("/event"):
            try:
                body = json.loads(p)
            except ValueError:
                continue
            for e in body.get("events", []):
                out.append((t, body.get("device"), e))
    return out


def samples(msgs, device):
    out = []
    for t, tp, p in msgs:
        if tp == f"ioc/{SITE}/{device}/telemetry":
            try:
                body = json.loads(p)
            except ValueError:
                continue
            for s in body.get("samples", []):
                out.append((t, body.get("epoch"), s))
    return out


# --- the Megatec UPS behind the USB serial adapter -------------------------


class MegatecSim:
    """Megatec/Q1 over qemu's usb-serial chardev (a unix socket qemu serves).
    Replies as tests/it/common/megatec_sim.rs does (frames from the codec's
    tests in src/source/megatec/codec.rs)."""

    F = b"#230.0 004 012.0 50.0\r"
    I = b"#WARDGATE-SIM    MEGA-1000  V1.0      \r"

    def __init__(self, path):
        self.path = path
        self.stop = False
        self.queries = 0
        # Q1's status bits: b7 utility fail (on battery), b6 battery low,
        # ..., b3 standby type, b0 beeper on.
        self.bits = "00001001"
        # Commands other than Q1/F/I (check 8: the power-off S<n>R<m>).
        self.commands = []
        threading.Thread(target=self._run, daemon=True).start()

    def q1(self):
        return f"(230.4 140.0 229.8 023 50.0 13.6 30.5 {self.bits}\r".encode()

    def _run(self):
        while not self.stop:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.path)
            except OSError:
                time.sleep(0.2)
                continue
            buf = b""
            try:
                while not self.stop:
                    d = s.recv(256)
                    if not d:
                        break
                    buf += d
                    while b"\r" in buf:
                        cmd, buf = buf.split(b"\r", 1)
                        cmd = cmd.strip(b"\x00\n ").decode("ascii", "replace")
                        self.queries += 1
                        if cmd.startswith("S") or cmd == "C":
                            # Shutdown commands: a real UPS says nothing.
                            self.commands.append(cmd)
                            continue
                        reply = {"Q1": self.q1(), "F": self.F, "I": self.I}.get(cmd, cmd.encode() + b"\r")
                        s.sendall(reply)
            except OSError:
                pass
            s.close()
            time.sleep(0.2)


# --- the machine ------------------------------------------------------------


class Qmp:
    def __init__(self, path, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "event" in r:
                continue
            if "error" in r:
                raise RuntimeError(f"QMP {name}: {r['error']}")
            return r.get("return")


class Agent:
    """The guest's command channel (virtio-serial port wardgate.agent)."""

    def __init__(self, path):
        self.path = path
        self.s = None
        self.buf = b""
        self.n = 0

    def _connect(self):
        deadline = time.monotonic() + 60
        while self.s is None:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.path)
                self.s = s
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def sh(self, cmd, timeout=120):
        """Runs cmd in the guest; returns (exit status, output) or (None, '') on time-out."""
        self._connect()
        self.n += 1
        tag = f"__WGBEGIN__{self.n}__"
        try:
            self.s.sendall(f"echo {tag}; {{ {cmd} ; }}\n".encode())
        except OSError:
            return None, ""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(re.escape(tag).encode() + rb"\n(.*?)__WGEND__ (\d+)\n", self.buf, re.S)
            if m:
                self.buf = self.buf[m.end():]
                return int(m.group(2)), m.group(1).decode("utf-8", "replace")
            left = deadline - time.monotonic()
            if left <= 0:
                return None, ""
            self.s.settimeout(min(left, 2))
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return None, ""
            if not d:
                return None, ""
            self.buf += d

    def wait_up(self, timeout, alive=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc, out = self.sh("echo up", timeout=5)
            if rc == 0:
                return True
            if alive is not None and not alive():
                return False
            time.sleep(0.5)
        return False


MACHINE = ["-M", "virt", "-cpu", "cortex-a57", "-smp", "2", "-m", "1024", "-nodefaults"]


def led_dtb(work):
    """qemu's own device tree for MACHINE with a Pi's activity LED added: a
    gpio-leds node "leds" (the Pi's node name, so the LED's directory is
    /sys/devices/platform/leds/leds/ACT as on a Pi) whose LED "ACT" is pin 0
    of the machine's PL061 GPIO controller."""
    out = os.path.join(work, "virt-led.dtb")
    if os.path.exists(out):
        return out
    plain = os.path.join(work, "virt.dtb")
    run("qemu-system-aarch64", *MACHINE, "-display", "none", "-machine", f"dumpdtb={plain}",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dts = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", plain], check=True,
                         capture_output=True, text=True).stdout
    m = re.search(r"pl061@[0-9a-f]+ \{\s*phandle = <(0x[0-9a-f]+)>;", dts)
    if not m:
        raise RuntimeError("no PL061 GPIO controller with a phandle in qemu's device tree")
    node = ("\tleds {\n\t\tcompatible = \"gpio-leds\";\n\t\tact {\n\t\t\tlabel = \"ACT\";\n"
            f"\t\t\tgpios = <{m.group(1)} 0x00 0x00>;\n\t\t\tdefault-state = \"off\";\n\t\t}};\n\t}};\n")
    end = dts.rstrip().rfind("};")
    dts = dts[:end] + node + dts[end:]
    src = os.path.join(work, "virt-led.dts")
    with open(src, "w") as f:
        f.write(dts)
    run("dtc", "-q", "-I", "dts", "-O", "dtb", "-o", out, src)
    return out


class Vm:
    def __init__(self, args, work, disk, broker, name):
        self.work, self.name = work, name
        self.qmp_path = os.path.join(work, "qmp.sock")
        self.agent_path = os.path.join(work, "agent.sock")
        self.ups_path = os.path.join(work, "ups.sock")
        for p in (self.qmp_path, self.agent_path, self.ups_path):
            if os.path.exists(p):
                os.unlink(p)
        self.console = os.path.join(work, f"console-{name}.log")
        cmd = [
            "qemu-system-aarch64", *MACHINE, "-display", "none", "-no-reboot",
            "-dtb", led_dtb(work),
            "-kernel", args.kernel, "-initrd", args.initrd,
            "-append", "root=/dev/vda2 rootfstype=ext4 rw console=ttyAMA0 systemd.firstboot=off panic=10",
            "-chardev", f"file,id=con,path={self.console}", "-serial", "chardev:con",
            "-drive", f"file={disk},format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0",
            "-netdev", f"user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:1883-cmd:socat - TCP:127.0.0.1:{broker.port}",
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-device", "qemu-xhci,id=xhci",
            "-chardev", f"socket,id=ups,path={self.ups_path},server=on,wait=off",
            "-device", f"usb-serial,chardev=ups,id=ups,serial={UPS_SERIAL},bus=xhci.0",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=agent,path={self.agent_path},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=wardgate.agent",
            "-chardev", "null,id=denied",
            "-device", "virtserialport,chardev=denied,name=wardgate.denied",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]
        self.log = open(os.path.join(work, f"qemu-{name}.log"), "w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        time.sleep(1)
        if self.proc.poll() is not None:
            with open(os.path.join(work, f"qemu-{name}.log")) as f:
                raise RuntimeError(f"qemu exited at once: {f.read().strip()}")
        self.qmp = Qmp(self.qmp_path)
        self.sim = MegatecSim(self.ups_path)
        self.agent = Agent(self.agent_path)

    def boot(self):
        if not self.agent.wait_up(BOOT_TIMEOUT, lambda: self.proc.poll() is None):
            say(f"[{self.name}] the guest's agent did not answer (qemu "
                f"{'running' if self.proc.poll() is None else 'exited'}; console: {self.console})")
            return False
        rc, out = self.agent.sh("systemctl is-system-running --wait", timeout=BOOT_TIMEOUT)
        say(f"[{self.name}] booted in {time.monotonic() - self.t0:.0f} s: system {out.strip() or rc}")
        if out.strip() != "running":
            _, failed = self.agent.sh("systemctl --failed --no-legend --plain")
            say(f"[{self.name}] failed units: {failed.strip() or '-'}")
        return True

    def poweroff(self, timeout=180):
        self.agent.sh("systemctl poweroff --no-block", timeout=10)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout):
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self):
        self.sim.stop = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- the SD card ------------------------------------------------------------

BOOT_OFFSET = 1024 * 1024
BOOT_MB = 64


def make_disk(path, root_img, card_files):
    """A disk like the Pi's card: partition 1 FAT (the boot partition, with
    card_files), partition 2 the ext4 root."""
    boot = path + ".boot"
    if os.path.exists(boot):
        os.unlink(boot)
    run("mkfs.vfat", "-n", "BOOTFS", "-C", boot, str(BOOT_MB * 1024), stdout=subprocess.DEVNULL)
    with open(os.path.join(os.path.dirname(path), "config.txt"), "w") as f:
        f.write("arm_64bit=1\n")
    run("mcopy", "-i", boot, os.path.join(os.path.dirname(path), "config.txt"), "::config.txt")
    for name, text in card_files.items():
        src = os.path.join(os.path.dirname(path), name)
        with open(src, "w") as f:
            f.write(text)
        run("mcopy", "-i", boot, src, "::" + name)
        os.unlink(src)
    root_bytes = os.path.getsize(root_img)
    root_start = BOOT_OFFSET + BOOT_MB * 1024 * 1024
    with open(path, "wb") as f:
        f.truncate(root_start + root_bytes)
    table = (f"label: dos\nstart={BOOT_OFFSET // 512}, size={BOOT_MB * 2048}, type=c\n"
             f"start={root_start // 512}, size={root_bytes // 512}, type=83\n")
    run("sfdisk", "-q", path, input=table.encode())
    run("dd", f"if={boot}", f"of={path}", "bs=1M", f"seek={BOOT_OFFSET // (1024 * 1024)}",
        "conv=notrunc", "status=none")
    run("dd", f"if={root_img}", f"of={path}", "bs=1M", f"seek={root_start // (1024 * 1024)}",
        "conv=notrunc,sparse", "status=none")
    os.unlink(boot)


def card_ls(disk):
    r = subprocess.run(["mdir", "-b", "-i", f"{disk}@@{BOOT_OFFSET}", "::"], capture_output=True, text=True)
    return [os.path.basename(x).strip() for x in r.stdout.split("\n") if x.strip()]


def card_read(disk, name):
    r = subprocess.run(["mtype", "-i", f"{disk}@@{BOOT_OFFSET}", "::" + name], capture_output=True)
    return r.stdout.decode("utf-8", "replace") if r.returncode == 0 else None


# --- the checks -------------------------------------------------------------


def unit(agent, name, props):
    rc, out = agent.sh(f"systemctl show {name} -p {','.join(props)}")
    d = {}
    for line in out.splitlines():
        k, _, v = line.partition("=")
        d[k] = v
    return d


def boot_a(args, broker):
    """Check 5: a broken wardgate.toml provisioned on a new box."""
    disk = os.path.join(args.work, "disk-a.img")
    make_disk(disk, args.root, {"wardgate.toml": BAD_TOML, "wardgate-mqtt.password": MQTT_PASS + "\n"})
    vm = Vm(args, args.work, disk, broker, "a")
    try:
        if not vm.boot():
            check(5, "bad config", False, "the machine did not boot")
            return
        a = vm.agent
        u = unit(a, "wardgate", ["ActiveState", "Result", "ExecMainStatus"])
        p = unit(a, "wardgate-provision", ["Result", "ExecMainStatus"])
        _, journal = a.sh("journalctl -b -u wardgate -u wardgate-provision --no-pager -o cat")
        led, led_detail = classify(led_trace(a, 2000))
        vm.poweroff()
    finally:
        vm.kill()
    result = card_read(disk, "wardgate-provisioning.txt") or ""
    names = card_ls(disk)
    problems = []
    if u.get("ActiveState") == "active":
        problems.append("wardgate.service is active")
    if u.get("Result") not in ("exec-condition",):
        problems.append(f"wardgate Result={u.get('Result')} (wanted exec-condition: start condition unmet)")
    if "mqtt.port" not in journal:
        problems.append("the journal does not name mqtt.port")
    if not result.startswith("LỖI / ERROR"):
        problems.append(f"result file starts {result[:30]!r}, not 'LỖI / ERROR'")
    if "mqtt.port" not in result:
        problems.append("the result file does not name mqtt.port")
    if "wardgate-mqtt.password" in names:
        problems.append("the password is still on the card")
    if "wardgate.toml" not in names:
        problems.append("the broken wardgate.toml was taken off the card (should stay to be fixed)")
    if led != "dark":
        problems.append(f"the LED is {led} ({led_detail}), not off as documented for 'wardgate not running'")
    detail = (f"wardgate {u.get('ActiveState')}/{u.get('Result')}, provisioning exit {p.get('ExecMainStatus')}, "
              f"result file '{result.splitlines()[0] if result else '(none)'}' naming mqtt.port, password off the card; "
              f"LED {LED} off ({led_detail}), the documented 'wardgate not running'")
    check(5, "bad config provisioned on a new box", not problems, "; ".join(problems) or detail)
    os.unlink(disk)  # before the next disk is made


def boot_b(args, broker):
    """Checks 1-4 and the first half of 6, on a fresh disk with a good card."""
    disk = os.path.join(args.work, "disk-b.img")
    make_disk(disk, args.root, {"wardgate.toml": GOOD_TOML, "wardgate-mqtt.password": MQTT_PASS + "\n"})
    vm = Vm(args, args.work, disk, broker, "b")
    t_boot = time.monotonic()
    shutdown_seen = None
    try:
        if not vm.boot():
            for n, name in ((1, "provisioning at boot"), (2, "the service under systemd"),
                            (3, "a USB serial UPS"), (4, "the watchdog"),
                            (9, "the clock state under the sandbox"),
                            (7, "config.set on the packaged service"),
                            (10, "the status LED under the sandbox")):
                check(n, name, False, "the machine did not boot")
            return disk, None
        a = vm.agent

        # 1. provisioning at boot, before wardgate.service
        p = unit(a, "wardgate-provision", ["Result", "ExecMainStatus", "ExecMainExitTimestampMonotonic"])
        w = unit(a, "wardgate", ["ExecMainStartTimestampMonotonic", "ActiveState"])
        _, card = a.sh("ls /boot/firmware")
        _, installed = a.sh("stat -c '%n %a %U:%G' /etc/wardgate/wardgate.toml /etc/wardgate/mqtt.password")
        _, site = a.sh("grep -c 'site = \"vm-test\"' /etc/wardgate/wardgate.toml")
        probs = []
        if p.get("Result") != "success" or p.get("ExecMainStatus") != "0":
            probs.append(f"provisioning {p.get('Result')} exit {p.get('ExecMainStatus')}")
        try:
            if not int(p["ExecMainExitTimestampMonotonic"]) <= int(w["ExecMainStartTimestampMonotonic"]):
                probs.append("wardgate started before provisioning finished")
        except (KeyError, ValueError):
            probs.append(f"no timestamps ({p}, {w})")
        if site.strip() != "1":
            probs.append("the config is not in /etc/wardgate")
        for f in ("wardgate.toml", "wardgate-mqtt.password"):
            if f in card.split():
                probs.append(f"{f} still on the card")
        if "wardgate-provisioning.txt" not in card.split():
            probs.append("no wardgate-provisioning.txt on the card")
        else:
            _, res = a.sh("head -1 /boot/firmware/wardgate-provisioning.txt")
            if not res.startswith("OK"):
                probs.append(f"result file says {res.strip()!r}")
        check(1, "provisioning at boot", not probs, "; ".join(probs) or
              "wardgate-provision ran and exited 0 before wardgate.service started; config and password in "
              f"/etc/wardgate ({'; '.join(installed.split(chr(10))).strip()}); result file 'OK'; secrets gone from the card")

        # 2. the service under systemd
        deadline = time.monotonic() + 180
        state = ""
        while time.monotonic() < deadline:
            _, state = a.sh("systemctl is-active wardgate")
            if state.strip() in ("active", "failed", "inactive"):
                break
            time.sleep(2)
        _, sec = a.sh("systemd-analyze security wardgate --no-pager | tail -1", timeout=300)
        got = broker.wait(t_boot, lambda m: m[1] == f"ioc/{SITE}/env1/telemetry", 120)
        _, journal = a.sh("journalctl -b -u wardgate --no-pager -o cat")
        denials = [l for l in journal.splitlines()
                   if re.search(r"denied|not permitted|EPERM|EACCES|read-only file system", l, re.I)
                   and "wardgate.denied" not in l]
        probs = []
        if state.strip() != "active":
            probs.append(f"is-active: {state.strip()}")
        m = re.search(r"exposure level for wardgate.service: ([0-9.]+)", sec)
        if not m:
            probs.append(f"systemd-analyze security: {sec.strip()!r}")
        elif float(m.group(1)) > 2.5:
            probs.append(f"exposure {m.group(1)} > 2.5")
        if denials:
            probs.append(f"{len(denials)} denial line(s) in the journal, e.g. {denials[0]!r}")
        if not got:
            probs.append("no telemetry at the host's mosquitto")
        # The hardening limits in force on the real system: the running
        # process may open 4096 files (LimitNOFILE), the provisioning job
        # is memory-capped.
        _, nofile = a.sh("grep 'Max open files' /proc/$(systemctl show -p MainPID --value wardgate)/limits")
        if nofile.split()[3:5] != ["4096", "4096"]:
            probs.append(f"open-files limit of the running process: {nofile.strip()!r}")
        _, memmax = a.sh("systemctl show -p MemoryMax --value wardgate-provision")
        if memmax.strip() != str(64 << 20):
            probs.append(f"wardgate-provision MemoryMax={memmax.strip()!r}")
        check(2, "the service under systemd", not probs, "; ".join(probs) or
              f"active after READY=1; {sec.strip()}; no sandbox denial in the journal; "
              f"open files 4096 (LimitNOFILE) in force, provisioning MemoryMax=64M; "
              f"telemetry at the host's mosquitto {got[0] - t_boot:.0f} s after boot start")

        # 3. a USB serial UPS
        probs = []
        _, link = a.sh("readlink -f /dev/wardgate-ups; ls /dev/serial/by-id/")
        if "/dev/ttyUSB" not in link:
            probs.append(f"/dev/wardgate-ups -> {link.strip()!r}")
        t3 = time.monotonic()
        first = broker.wait(t_boot, lambda m: m[1] == f"ioc/{SITE}/ups1/telemetry" and "230.4" in m[2], 120)
        if not first:
            probs.append("no UPS readings")
        def denied_lines(text):
            # The line must name the device and the fix (DeviceAllow=).
            return [l for l in text.splitlines() if "wardgate.denied" in l and "DeviceAllow=" in l]
        denied_line = denied_lines(journal)
        if not denied_line:
            _, journal = a.sh("journalctl -b -u wardgate --no-pager -o cat")
            denied_line = denied_lines(journal)
        if not denied_line:
            probs.append("no log line naming the device outside DeviceAllow= and the fix")
        before = unit(a, "wardgate", ["MainPID", "NRestarts"])
        t_unplug = time.monotonic()
        vm.qmp.cmd("device_del", id="ups")
        fault = broker.wait(t_unplug, lambda m: m[1] == f"ioc/{SITE}/ups1/event"
                            and re.search(r'"code":"device\.(fault|lost)"', m[2]), 4 * UPS_INTERVAL + 30)
        fault_s = fault[0] - t_unplug if fault else None
        if not fault:
            probs.append("no device.fault/device.lost after the unplug")
        elif fault_s > 2 * UPS_INTERVAL:
            probs.append(f"device fault {fault_s:.1f} s after the unplug (> two intervals, {2 * UPS_INTERVAL:.0f} s)")
        _, gone = a.sh("test -e /dev/wardgate-ups && echo present || echo gone")
        time.sleep(2)
        t_plug = time.monotonic()
        vm.qmp.cmd("device_add", driver="usb-serial", id="ups", chardev="ups", serial=UPS_SERIAL, bus="xhci.0")
        again = broker.wait(t_plug, lambda m: m[1] == f"ioc/{SITE}/ups1/telemetry" and "230.4" in m[2], 120)
        restored = broker.wait(t_plug, lambda m: m[1] == f"ioc/{SITE}/ups1/event"
                               and '"code":"device.restored"' in m[2], 60)
        after = unit(a, "wardgate", ["MainPID", "NRestarts"])
        if not again:
            probs.append("no readings after the re-plug")
        if before != after:
            probs.append(f"the service restarted ({before} -> {after})")
        check(3, "a USB serial UPS", not probs, "; ".join(probs) or
              f"/dev/wardgate-ups -> {link.split()[0]} (example rule); readings through it; outside the allow-list: "
              f"{denied_line[0].strip()[:160]!r}; unplug -> device fault after {fault_s:.1f} s (node {gone.strip()}); "
              f"re-plug -> readings after {again[0] - t_plug:.1f} s"
              f"{', device.restored' if restored else ''}, same MainPID {after.get('MainPID')}, "
              f"NRestarts {after.get('NRestarts')}")

        # 4. the watchdog
        probs = []
        w0 = unit(a, "wardgate", ["MainPID", "NRestarts", "WatchdogUSec"])
        t_stop = time.monotonic()
        a.sh(f"kill -STOP {w0.get('MainPID')}")
        deadline = time.monotonic() + 240
        w1 = w0
        while time.monotonic() < deadline:
            w1 = unit(a, "wardgate", ["MainPID", "NRestarts", "ActiveState"])
            if w1.get("NRestarts") != w0.get("NRestarts") and w1.get("ActiveState") == "active":
                break
            time.sleep(3)
        restart_s = time.monotonic() - t_stop
        _, wj = a.sh("journalctl -b -u wardgate --no-pager -o cat | grep -E 'Watchdog timeout' | head -3")
        _, pings = a.sh("journalctl -b -u wardgate --no-pager -o short-monotonic | grep -i 'not pinging' | head -3")
        unclean = broker.wait(t_stop, lambda m: m[1] == f"ioc/{SITE}/gateway/event"
                              and '"code":"gateway.unclean_stop"' in m[2], 120)
        if w1.get("NRestarts") == w0.get("NRestarts"):
            probs.append(f"not restarted within {restart_s:.0f} s")
        if "Watchdog timeout" not in wj:
            probs.append("no 'Watchdog timeout' from systemd in the journal")
        if not unclean:
            probs.append("no gateway.unclean_stop event")
        # Nothing acknowledged lost: after the restart, every env1 sample number
        # up to seq_last_used is at the broker (spool.policy = "wal").
        lost = None
        seq_note = ""
        if unclean:
            time.sleep(8)  # the backlog after the restart
            ev = [e for _, _, e in events([unclean])][0]
            vals = ev.get("values", {})
            last = vals.get("seq_last_used.env1.samples")
            got = [s["seq"] for _, _, s in samples(broker.since(t_boot), "env1")]
            if last is None:
                probs.append(f"unclean_stop has no seq_last_used.env1.samples ({vals})")
            elif got:
                lost = sorted(set(range(min(got), int(last) + 1)) - set(got))
                seq_note = f"env1 samples {min(got)}..{last} all at the broker ({len(set(got))} distinct)"
                if lost:
                    probs.append(f"{len(lost)} env1 sample(s) up to seq_last_used {last} never arrived: {lost[:10]}")
        check(4, "the watchdog", not probs, "; ".join(probs) or
              f"SIGSTOP -> restarted after {restart_s:.0f} s (WatchdogUSec {w0.get('WatchdogUSec')}, "
              f"NRestarts {w0.get('NRestarts')} -> {w1.get('NRestarts')}); journal: "
              f"{wj.strip().splitlines()[0][:100]!r}; gateway.unclean_stop published; {seq_note}")
        if pings.strip():
            say(f"    note: the daemon's own 'not pinging' lines this boot: {pings.strip()!r}")

        check_clock(vm, broker)
        check_config_set(vm, broker)
        check_led(vm, broker)

        # 6, first half: a clean poweroff publishes offline/shutdown
        t_off = time.monotonic()
        vm.poweroff()
        shutdown_seen = broker.wait(t_off, lambda m: m[1] == f"ioc/{SITE}/status"
                                    and '"reason":"shutdown"' in m[2], 5)
    finally:
        vm.kill()
    return disk, shutdown_seen


def check_config_set(vm, broker):
    """Check 7: config.set under the packaged unit. Refused with the fix
    while the unit is as strict as shipped; then the drop-in the package
    ships and the group write bit, as docs/mqtt.md says; a change that
    works is confirmed, a takeover is rejected by the remote-change policy,
    and one that cuts the link is rolled back once root's policy file
    allows moving the broker."""
    a = vm.agent
    name = "config.set on the packaged service"
    conf = "/etc/wardgate/wardgate.toml"
    fix_file = "/usr/share/wardgate/config-set.conf"
    probs, notes = [], []

    def file_now():
        _, h = a.sh(f"sha256sum {conf} | cut -c1-64")
        _, b = a.sh(f"base64 -w0 {conf}")
        return "sha256:" + h.strip(), base64.b64decode(b.strip()).decode()

    def sha(text):
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def config_set(cid, toml, base, allow_broker_change=False, timeout=180):
        args = {"toml": toml, "base_hash": base}
        if allow_broker_change:
            args["allow_broker_change"] = True
        return command(broker, "config.set", cid, args, timeout)

    def check_says():
        # `wardgate check` on a config in the same directory without
        # devices (the running service has the UPS's serial port).
        a.sh("sed '/^\\[\\[device\\]\\]/,$d' " + conf + " > /etc/wardgate/check-cs.toml")
        _, out = a.sh("wardgate check --config /etc/wardgate/check-cs.toml; rm -f /etc/wardgate/check-cs.toml")
        return out

    # (0) as shipped: refused, with the fix in the reason and from check
    said = check_says()
    if "CANNOT write /etc/wardgate" not in said or f"install -D -m 0644 {fix_file}" not in said \
            or "chmod g+w /etc/wardgate" not in said:
        probs.append(f"wardgate check before the drop-in says {said.strip()!r}")
    h0, text0 = file_now()
    new_a = text0.replace('interval = "2s"', 'interval = "3s"')
    # The device whose node the unit refuses never reads, so no config
    # with it could be confirmed.
    cut = new_a.find('[[device]]\nid = "denied"')
    new_a = new_a[:cut] if cut > 0 else new_a
    r, _, _ = config_set("vm-ro", new_a, h0)
    why = (r or {}).get("reason") or ""
    if not r or r.get("status") != "failed" or "Read-only file system" not in why or fix_file not in why \
            or "chmod g+w /etc/wardgate" not in why:
        probs.append(f"strict unit: reply {r}")
    if file_now()[0] != h0:
        probs.append("strict unit: the config changed")
    else:
        notes.append("as shipped: failed naming the drop-in and chmod g+w, nothing changed; check says CANNOT")

    # Enable it as docs/mqtt.md says.
    rc, out = a.sh(f"install -D -m 0644 {fix_file} /etc/systemd/system/wardgate.service.d/config-set.conf"
                   " && chmod g+w /etc/wardgate && systemctl daemon-reload && systemctl restart wardgate")
    if rc != 0:
        probs.append(f"enabling the drop-in: {rc} {out.strip()!r}")
    said = check_says()
    if "the service (wardgate) can write /etc/wardgate" not in said:
        probs.append(f"wardgate check after the drop-in says {said.strip()!r}")
    _, rwp = a.sh("systemctl show wardgate -p ReadWritePaths --value")
    before = unit(a, "wardgate", ["MainPID", "NRestarts"])

    # (a) a new poll interval: confirmed
    r, took, _ = config_set("vm-ok", new_a, h0)
    h1, text1 = file_now()
    _, mode = a.sh(f"stat -c '%a %U:%G' {conf}")
    after = unit(a, "wardgate", ["MainPID", "NRestarts", "ActiveState"])
    if not r or r.get("status") != "successful" or (r.get("result") or {}).get("hash") != sha(new_a):
        probs.append(f"new interval: reply {r}")
    elif h1 != sha(new_a):
        probs.append(f"new interval: the file is {h1}, not the new config")
    elif after.get("MainPID") == before.get("MainPID") or after.get("ActiveState") != "active":
        probs.append(f"new interval: the service did not restart into it ({before} -> {after})")
    else:
        notes.append(f"drop-in in effect (ReadWritePaths={rwp.strip()}), check says it can write; "
                     f"new interval confirmed after {took:.0f} s (file {mode.strip()}, NRestarts "
                     f"{before.get('NRestarts')} -> {after.get('NRestarts')})")

    # (b) a takeover: [power] pointed at the UPS with a shell as the
    # shutdown command. The built-in remote-change policy rejects it,
    # naming the keys; nothing is written, nothing runs.
    marker = "/run/wardgate-vm-ran"
    takeover = text1 + ('\n[power]\nups = "ups1"\n'
                        f'shutdown_command = ["/bin/sh", "-c", "touch {marker}"]\n')
    r, _, _ = config_set("vm-takeover", takeover, h1)
    why = (r or {}).get("reason") or ""
    rc_marker, _ = a.sh(f"test -e {marker}")
    if not r or r.get("status") != "rejected" or "power.shutdown_command" not in why \
            or "power.ups" not in why:
        probs.append(f"takeover: reply {r}")
    elif file_now()[0] != h1 or rc_marker == 0:
        probs.append("takeover: the config changed or the command ran")
    else:
        notes.append(f"a [power] shell rejected by the built-in policy ({why[:120]!r}), nothing written or run")

    # (c) a dead broker: moving the broker is refused by the built-in
    # policy; root widens it with /etc/wardgate-remote-change.toml (only
    # root can write it, the service reads it at each config.set); then
    # it is tried and rolled back within confirm_within.
    dead = text1.replace("port = 1883", "port = 1884")
    r, _, _ = config_set("vm-cut0", dead, h1, allow_broker_change=True)
    why = (r or {}).get("reason") or ""
    if not r or r.get("status") != "rejected" or "mqtt.port" not in why:
        probs.append(f"dead broker before the policy file: reply {r}")
    rc, out = a.sh("printf 'allow = [\"mqtt.port\"]\\n' > /etc/wardgate-remote-change.toml"
                   " && chmod 0644 /etc/wardgate-remote-change.toml")
    if rc != 0:
        probs.append(f"writing the policy file: {rc} {out.strip()!r}")
    r, took, t_reply = config_set("vm-cut", dead, h1, allow_broker_change=True, timeout=240)
    why = (r or {}).get("reason") or ""
    h2, _ = file_now()
    back = broker.wait(t_reply, lambda m: m[1] == f"ioc/{SITE}/env1/telemetry", 60) if t_reply else None
    if not r or r.get("status") != "failed" or "rolled back" not in why or "no connection to the broker" not in why:
        probs.append(f"dead broker: reply {r}")
    elif took < CONFIRM_WITHIN:
        probs.append(f"dead broker: failed after {took:.0f} s, before confirm_within ({CONFIRM_WITHIN} s)")
    elif h2 != h1:
        probs.append(f"dead broker: the file is {h2}, not the previous {h1}")
    elif not back:
        probs.append("dead broker: no telemetry after the rollback")
    else:
        notes.append(f"dead broker rejected by the built-in policy, allowed by the policy file, then "
                     f"rolled back: failed after {took:.0f} s ({why[:90]!r}), previous file "
                     f"restored, telemetry again {back[0] - t_reply:.0f} s after the reply")
    a.sh("rm -f /etc/wardgate-remote-change.toml")
    check(7, name, not probs, "; ".join(probs) or "; ".join(notes))


def command(broker, op, cid, args=None, timeout=120):
    """Sends one command as the IOC does; (final reply or None, seconds, host time)."""
    t = time.monotonic()
    body = {"expires": int(time.time() * 1000) + 600_000, "args": args or {}}
    broker.publish(f"ioc/{SITE}/cmd/{op}/{cid}", json.dumps(body))
    topic = f"ioc/{SITE}/cmd/{op}/{cid}/reply"

    def final(m):
        if m[1] != topic:
            return False
        try:
            return json.loads(m[2]).get("status") in ("successful", "failed", "rejected")
        except ValueError:
            return False
    m = broker.wait(t, final, timeout)
    return (json.loads(m[2]), m[0] - t, m[0]) if m else (None, time.monotonic() - t, None)


HOUR_MS = 3_600_000


def behind(m):
    """How far the newest sample of a telemetry message is behind the host's
    true time, in ms."""
    try:
        return int(time.time() * 1000) - json.loads(m[2])["samples"][-1]["ts"]
    except (ValueError, KeyError, IndexError, TypeError):
        return 0


def check_clock(vm, broker):
    """Check 9: the clock state under the packaged unit, with no trust_clock.
    The guest's kernel clock starts unsynchronised, and the test sets it an
    hour behind (as fake-hwclock leaves a Pi that was off): readings go out
    "unsynced" an hour early and a config.set is refused for the clock. The
    link is taken down (networkctl), readings spool, the test steps the
    clock an hour forward and marks it
    synchronised (adjtimex, as an NTP daemon does), the service sees it and
    is restarted (a clean stop puts every unacknowledged reading on the card;
    on a dead link TCP would otherwise keep them in flight, stamped), the
    link comes back: the spooled readings of this boot go out "corrected",
    gateway.clock_corrected reports the ones delivered unsynchronised, new
    readings are "synced"."""
    a = vm.agent
    name = "the clock state under the sandbox"
    probs, notes = [], []
    env1 = f"ioc/{SITE}/env1/telemetry"

    def clocks(msgs):
        return [smp.get("clock") for _, _, smp in samples(msgs, "env1")]

    _, state = a.sh(f"{TOOL} ntp-state")
    if state.strip() != "unsynced":
        probs.append(f"the guest's clock is {state.strip()!r} at the start, not unsynced")
    _, state = a.sh(f"{TOOL} clock-step -{HOUR_MS}")
    if state.strip() != "unsynced":
        probs.append(f"after an hour back the guest's clock is {state.strip()!r}, not unsynced")
    t0 = time.monotonic()
    early = broker.wait(t0, lambda m: m[1] == env1 and '"clock":"unsynced"' in m[2]
                        and behind(m) > HOUR_MS - 60_000, 60)
    if not early:
        probs.append("no env1 reading sent unsynced an hour early")
    r, _, _ = command(broker, "config.set", "vm-clock", {"toml": "site = \"x\"\n", "base_hash": "sha256:0"})
    why = (r or {}).get("reason") or ""
    if not r or r.get("status") != "rejected" or "clock" not in why:
        probs.append(f"config.set before the clock synchronised: {r}")
    else:
        notes.append(f"unsynced readings; config.set rejected ({why[:70]!r})")
    _, ifname = a.sh("ls /sys/class/net | grep -v '^lo$' | head -1")
    ifname = ifname.strip()
    rc, out = a.sh(f"networkctl down {ifname}")
    if rc != 0:
        probs.append(f"networkctl down {ifname}: {rc} {out.strip()!r}")
    time.sleep(10)  # readings spool while the link is down
    rc, synced = a.sh(f"{TOOL} ntp-sync {HOUR_MS}")
    t_sync = time.monotonic()
    if synced.strip() != "synced":
        probs.append(f"ntp-sync: {rc} {synced.strip()!r}")
    # The service sees the sync (it asks the kernel at most every 5 s): it
    # corrects what it holds and declares what it delivered unsynchronised
    # (gateway.clock_corrected keeps only what this run delivered: a run
    # that stopped before the sync cannot declare its readings).
    time.sleep(8)
    a.sh("systemctl restart wardgate", timeout=90)
    a.sh(f"networkctl up {ifname}")
    ev = broker.wait(t_sync, lambda m: m[1] == f"ioc/{SITE}/gateway/event"
                     and '"code":"gateway.clock_corrected"' in m[2], 120)
    live = broker.wait(t_sync, lambda m: m[1] == env1 and '"clock":"synced"' in m[2]
                       and '"historical":false' in m[2], 120)
    time.sleep(5)
    after = clocks(broker.since(t_sync))
    corrected = [smp for _, _, smp in samples(broker.since(t_sync), "env1") if smp.get("clock") == "corrected"]
    off = [abs(int(time.time() * 1000) - smp["ts"]) for smp in corrected]
    if corrected and max(off) > 10 * 60_000:
        probs.append(f"corrected readings' ts are {max(off)} ms from the true time (wanted within minutes)")
    if not ev:
        probs.append("no gateway.clock_corrected event")
    else:
        e = [x for _, _, x in events([ev]) if x.get("code") == "gateway.clock_corrected"][0]
        got = (e.get("values") or {}).get("clock.offset_ms")
        if got is None or abs(got - HOUR_MS) > 5_000:
            probs.append(f"gateway.clock_corrected offset {got} ms, not an hour ({e})")
    if "corrected" not in after:
        probs.append(f"no env1 reading went out corrected after the sync (clocks seen: {sorted(set(after))})")
    if not live:
        probs.append("no live env1 reading sent synced")
    _, journal = a.sh("journalctl -b -u wardgate --no-pager -o cat | grep -iE 'adjtimex|clock' | tail -3")
    if probs:
        probs.append(f"journal: {journal.strip()[-300:]!r}")
    else:
        e = [x for _, _, x in events([ev]) if x.get("code") == "gateway.clock_corrected"][0]
        notes.append(f"after the sync: {after.count('corrected')} spooled readings out corrected, "
                     f"gateway.clock_corrected ({json.dumps(e.get('values', {}))[:90]}), live readings synced")
    check(9, name, not probs, "; ".join(probs) or "; ".join(notes))


def classify(trace):
    """The documented LED pattern (src/status/led.rs) a brightness trace
    shows: [(ms, value)] changes from the guest's sampler. Returns
    (pattern, detail)."""
    pts = [(t, v != "0") for t, v in trace if v not in ("end",)]
    if not pts:
        return "none", "no samples"
    end = trace[-1][0]
    ons, offs, starts = [], [], []
    for (t, lit), (t2, _) in zip(pts, pts[1:] + [(end, None)]):
        (ons if lit else offs).append(t2 - t)
        if lit:
            starts.append(t)
    changes = len(pts) - 1
    if changes == 0:
        return ("steady" if pts[0][1] else "dark"), f"{'lit' if pts[0][1] else 'dark'} for {end} ms"
    inner_on = sorted(ons[1:-1] or ons)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else 0
    detail = f"{changes} changes, on {med(inner_on)} ms (median), on-to-on {sorted(gaps)[:3]}..{sorted(gaps)[-3:]} ms"
    period = med(gaps)
    short = [g for g in gaps if g < 600]
    long_ = [g for g in gaps if g >= 1200]
    if short and long_ and 60 <= med(inner_on) <= 200 and all(150 <= g <= 450 for g in short) \
            and all(1300 <= g <= 2000 for g in long_) and abs(len(short) - len(long_)) <= 1:
        return "double-flash", detail
    if 70 <= period <= 150:
        return "flicker", detail
    if 190 <= period <= 340:
        return "fast-blink", detail
    if 800 <= period <= 1250:
        return "slow-blink", detail
    return "unknown", detail


def led_trace(agent, ms, before=""):
    rc, out = agent.sh(f"{before}{TOOL} led {LED} {ms}", timeout=ms / 1000 + 60)
    trace = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            trace.append((int(parts[0]), parts[1]))
    return trace


def check_led(vm, broker):
    """Check 10: the status LED under the packaged unit, on a real LED class
    device at the Pi's path (/sys/class/leds/ACT -> /sys/devices/platform/
    leds/leds/ACT, the device tree's gpio-leds). The package's udev rule
    gives group wardgate write access to its trigger and brightness, the
    unit opens the LED's own directory; the guest's root shell samples the
    brightness while the test sets each state: healthy (steady), a device
    lost (fast blink), identify (flicker), starting (double flash: the
    broker answers nothing, so the first connection attempt lasts)."""
    a = vm.agent
    name = "the status LED under the sandbox"
    probs, notes = [], []
    _, where = a.sh(f"readlink -f {LED}")
    _, perms = a.sh(f"stat -c '%n %U:%G %A' {LED}/trigger {LED}/brightness")
    if where.strip() != "/sys/devices/platform/leds/leds/ACT":
        probs.append(f"{LED} -> {where.strip()!r}")
    for line in perms.strip().splitlines():
        f = line.split()
        if len(f) != 3 or not f[1].endswith(":wardgate") or f[2][5] != "w":
            probs.append(f"not writable by group wardgate: {line!r}")

    def see(label, want, ms=4000, before=""):
        trace = led_trace(a, ms, before)
        got, detail = classify(trace)
        if got != want:
            probs.append(f"{label}: {got}, wanted {want} ({detail}; trace {trace[:12]})")
        else:
            notes.append(f"{label}: {got} ({detail})")
        return trace

    # Healthy: every device reads (check 7 left a config without the
    # device the unit refuses), the link is up.
    see("healthy", "steady")
    # A device lost: the UPS's USB adapter unplugged.
    t = time.monotonic()
    vm.qmp.cmd("device_del", id="ups")
    if broker.wait(t, lambda m: m[1] == f"ioc/{SITE}/ups1/event"
                   and re.search(r'"code":"device\.(fault|lost)"', m[2]), 60):
        see("a device lost (UPS unplugged)", "fast-blink")
    else:
        probs.append("no device.fault/lost after the unplug")
    t = time.monotonic()
    vm.qmp.cmd("device_add", driver="usb-serial", id="ups", chardev="ups", serial=UPS_SERIAL, bus="xhci.0")
    if not broker.wait(t, lambda m: m[1] == f"ioc/{SITE}/ups1/event" and '"code":"device.restored"' in m[2], 90):
        probs.append("no device.restored after the re-plug")
    # Identify from the operations centre: flicker.
    r, _, _ = command(broker, "identify", "vm-led", {"seconds": 30})
    if not r or r.get("status") != "successful":
        probs.append(f"identify: {r}")
    else:
        see("identify", "flicker", 3000)
    # Starting: the broker takes the connection but answers nothing
    # (SIGSTOP), so the first attempt lasts until connect_timeout (20 s).
    a.sh("systemctl stop wardgate", timeout=60)
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        trace = led_trace(a, 9000, before="systemctl start --no-block wardgate; sleep 3; ")
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    got, detail = classify(trace)
    if got != "double-flash":
        probs.append(f"starting: {got}, wanted double-flash ({detail}; trace {trace[:12]})")
    else:
        notes.append(f"starting (broker silent): {got} ({detail})")
    up = broker.wait(time.monotonic(), lambda m: m[1] == f"ioc/{SITE}/env1/telemetry", 120)
    if not up:
        probs.append("no readings after the broker answered again")
    _, journal = a.sh("journalctl -b -u wardgate --no-pager -o cat | grep -iE 'status LED' | tail -2")
    if journal.strip():
        probs.append(f"journal: {journal.strip()!r}")
    check(10, name, not probs, "; ".join(probs) or
          f"{LED} -> {where.strip()} (group wardgate, g+w by the package's udev rule); " + "; ".join(notes))


def boot_c(args, broker, disk, shutdown_seen):
    """Check 6: the next boot after a clean poweroff has no unclean_stop.
    Check 8: then a long power cut powers the Pi off by itself."""
    vm = Vm(args, args.work, disk, broker, "c")
    t_boot = time.monotonic()
    try:
        if not vm.boot():
            check(6, "a clean shutdown", False, "the machine did not boot again")
            check(8, "power-off on a long power cut", False, "the machine did not boot again")
            return
        first = broker.wait(t_boot, lambda m: m[1] == f"ioc/{SITE}/env1/telemetry", 180)
        time.sleep(10)
        _, journal = vm.agent.sh("journalctl -b -u wardgate --no-pager -o cat | grep -i unclean | head -2")
        check_power_off(vm, broker)
    finally:
        vm.kill()
    unclean = [e for _, _, e in events(broker.since(t_boot)) if e.get("code") == "gateway.unclean_stop"]
    probs = []
    if not shutdown_seen:
        probs.append("no offline status with reason shutdown at poweroff")
    if not first:
        probs.append("no telemetry after the next boot")
    if unclean or journal.strip():
        probs.append(f"gateway.unclean_stop at the next boot: {journal.strip()[:120] or unclean[0]}")
    check(6, "a clean shutdown", not probs, "; ".join(probs) or
          f"poweroff -> status {shutdown_seen[2]}; next boot publishes again with no gateway.unclean_stop")


POWER_TOML = """
[power]
ups = "ups1"
shutdown_after_on_battery = "10s"
ups_off_delay = "30s"
"""


def check_power_off(vm, broker):
    """Check 8: [power] under the packaged unit. The UPS goes on battery;
    after shutdown_after_on_battery on two good polls the gateway sends
    power.shutdown, stops with the offline status reason power, tells the UPS
    (S.5R0003 on the USB serial wire) and runs `systemctl poweroff` as the
    wardgate user, which the package's polkit rule allows: the machine
    powers itself off."""
    a = vm.agent
    probs, notes = [], []
    b64 = base64.b64encode(POWER_TOML.encode()).decode()
    a.sh(f"echo {b64} | base64 -d >> /etc/wardgate/wardgate.toml")
    # The service is stopped meanwhile: --power-test reads the UPS itself.
    a.sh("systemctl stop wardgate")
    rc, test = a.sh("wardgate check --power-test --config /etc/wardgate/wardgate.toml 2>&1", timeout=120)
    said = [l.strip() for l in test.splitlines() if "shutdown command" in l]
    ok = [l for l in said if re.search(r"\): allowed \(", l)]
    if not ok:
        probs.append(f"--power-test (exit {rc}) does not say the power-off is allowed: {said or test.strip()[-300:]!r}")
    else:
        notes.append(f"--power-test (exit {rc}): {ok[0][:160]!r}")
    t_restart = time.monotonic()
    a.sh("systemctl start wardgate")
    up = broker.wait(t_restart, lambda m: m[1] == f"ioc/{SITE}/ups1/telemetry", 120)
    if not up:
        probs.append("no UPS readings after the restart with [power]")
    t_ob = time.monotonic()
    vm.sim.bits = "10001001"
    ev = broker.wait(t_ob, lambda m: m[1] == f"ioc/{SITE}/gateway/event"
                     and '"code":"power.shutdown"' in m[2], 120)
    off = vm.wait_exit(240)
    status = broker.wait(t_ob, lambda m: m[1] == f"ioc/{SITE}/status" and '"reason":"power"' in m[2], 5)
    if not ev:
        probs.append("no power.shutdown event")
    if not status:
        probs.append("no offline status with reason power")
    if not any(c.startswith("S.5R") for c in vm.sim.commands):
        probs.append(f"the UPS never got S.5R…: {vm.sim.commands}")
    if not off:
        _, j = a.sh("journalctl -b -u wardgate --no-pager -o cat | grep -iE 'power|shutdown' | tail -5")
        probs.append(f"the machine did not power itself off within 240 s; journal: {j.strip()[-400:]!r}")
    check(8, "power-off on a long power cut", not probs, "; ".join(probs) or
          "; ".join(notes + [f"on battery -> power.shutdown after {ev[0] - t_ob:.0f} s, offline status reason power, "
                             f"UPS got {[c for c in vm.sim.commands if c.startswith('S')][0]!r}, "
                             f"the machine powered itself off (systemctl poweroff as user wardgate via the polkit rule)"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--cuts", type=int, default=5,
                    help="power cuts in check 11 (0: no check 11)")
    ap.add_argument("--seed", type=int, default=None, help="the power cuts' random moments")
    ap.add_argument("--only-cuts", action="store_true", help="check 11 alone (boots A-C skipped)")
    args = ap.parse_args()
    if os.path.exists(args.work):
        shutil.rmtree(args.work)
    os.makedirs(args.work)
    broker = Broker(args.work)
    try:
        if not args.only_cuts:
            boot_a(args, broker)
            disk, shutdown_seen = boot_b(args, broker)
            if os.path.exists(disk):
                boot_c(args, broker, disk, shutdown_seen)
                os.unlink(disk)
        if args.cuts > 0:
            import powercut
            powercut.run(args, broker, args.cuts, args.seed)
    finally:
        broker.stop(os.path.join(args.work, "mqtt.log"))
        # The disks are about 1 GB each: never leave them behind.
        for name in os.listdir(args.work):
            if name.startswith("disk-"):
                os.unlink(os.path.join(args.work, name))
    passed = sum(results)
    failed = len(results) - passed
    say(f"logs: {args.work} (console-*.log, qemu-*.log, mosquitto.log, mqtt.log: every message seen)")
    say(f"vm: {passed} passed, {failed} failed")
    want = (0 if args.only_cuts else CHECKS) + (1 if args.cuts > 0 else 0)
    return 0 if failed == 0 and passed == want else 1


if __name__ == "__main__":
    sys.exit(main())
