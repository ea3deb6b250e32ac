//! What the gateway touches on its host outside its own state directory:
//! every device node and kernel file it opens, in one table ([`ACCESS`]),
//! with what the shipped systemd unit and package must grant for each; and
//! the one reader of files a config names ([`file`]).
//!
//! The unit runs the daemon in a tight sandbox (`DevicePolicy=closed`,
//! `ProtectKernelTunables=yes` making /sys read-only, no capabilities, a
//! user of its own). A feature that opens something the sandbox does not
//! allow works in every test run outside the unit and fails on every Pi.
//! The unit tests below read `systemd/wardgate.service`, the package's udev
//! rules and its maintainer script, and fail when any entry here is not
//! granted, or when the unit grants something that is not here.

pub(crate) mod file;
pub(crate) mod memory;

/// The Pi's activity LED, the status LED by default (`led.path`).
pub(crate) const LED_ACT: &str = "/sys/class/leds/ACT";
/// The SoC's temperature (the Pi health source).
pub(crate) const THERMAL_ZONE0: &str = "/sys/class/thermal/thermal_zone0/temp";
/// The firmware's throttling flags (the Pi health source).
pub(crate) const THROTTLED: &str = "/sys/devices/platform/soc/soc:firmware/get_throttled";
/// Where the kernel lists 1-Wire devices.
pub(crate) const W1_DEVICES: &str = "/sys/bus/w1/devices";

/// One thing on the host the daemon opens.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(test), allow(dead_code))] // used by the tests
pub(crate) struct Access {
    /// What it is for, in words.
    pub what: &'static str,
    /// The path as the code opens it; `*` stands for a number or a name.
    pub path: &'static str,
    pub grant: Grant,
}

/// What the unit and package must give for an [`Access`].
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(test), allow(dead_code))] // used by the tests
pub(crate) enum Grant {
    /// A device node opened read-write: the unit's `DeviceAllow=<allow> rw`
    /// (a `char-NAME` class from /proc/devices, or the path), and the group
    /// that owns the node in the unit's groups; `rule` says whose udev rule
    /// gives the node that group.
    Device {
        allow: &'static str,
        group: &'static str,
        rule: Rule,
    },
    /// Kernel files written in the LED class directory `dir`
    /// (`/sys/class/leds/NAME`): the unit re-opens `dir` itself with
    /// `ReadWritePaths=` (systemd follows the class link into
    /// /sys/devices, which the class directory alone would not make
    /// writable), and the package's udev rule gives group `wardgate` write
    /// access to `files` of the LED named `name`.
    LedFiles {
        dir: &'static str,
        name: &'static str,
        files: &'static [&'static str],
    },
    /// Read only, under /sys or /proc: readable under the sandbox as it is
    /// (`ProtectKernelTunables=` makes them read-only, not hidden).
    Read,
}

/// Whose udev rule gives a device node its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))] // used by the tests
pub(crate) enum Rule {
    /// Debian's own (`50-udev-default.rules`: `tty[A-Z]*[0-9]` is group
    /// dialout).
    Debian,
    /// The package's `/lib/udev/rules.d/60-wardgate.rules`.
    Package,
}

#[cfg_attr(not(test), allow(dead_code))] // used by the tests
const LED_FILES: &[&str] = &["trigger", "brightness"];

/// Every device node and kernel file the daemon opens.
#[cfg_attr(not(test), allow(dead_code))] // used by the tests
pub(crate) const ACCESS: &[Access] = &[
    Access {
        what: "USB serial adapters (UPS, RS-485)",
        path: "/dev/ttyUSB*",
        grant: Grant::Device {
            allow: "char-ttyUSB",
            group: "dialout",
            rule: Rule::Debian,
        },
    },
    Access {
        what: "USB CDC serial devices",
        path: "/dev/ttyACM*",
        grant: Grant::Device {
            allow: "char-ttyACM",
            group: "dialout",
            rule: Rule::Debian,
        },
    },
    Access {
        what: "the Pi's UARTs",
        path: "/dev/ttyAMA*",
        grant: Grant::Device {
            allow: "char-ttyAMA",
            group: "dialout",
            rule: Rule::Debian,
        },
    },
    Access {
        what: "8250 serial ports (the Pi's mini UART, PCI cards)",
        path: "/dev/ttyS*",
        grant: Grant::Device {
            allow: "char-ttyS",
            group: "dialout",
            rule: Rule::Debian,
        },
    },
    Access {
        what: "GPIO registers, Pi 1-4 (rppal maps them: contacts, a GPIO LED)",
        path: "/dev/gpiomem",
        grant: Grant::Device {
            allow: "/dev/gpiomem",
            group: "gpio",
            rule: Rule::Package,
        },
    },
    Access {
        what: "GPIO registers, Pi 5",
        path: "/dev/gpiomem0",
        grant: Grant::Device {
            allow: "/dev/gpiomem0",
            group: "gpio",
            rule: Rule::Package,
        },
    },
    Access {
        what: "GPIO character devices (rppal takes contact edges from them)",
        path: "/dev/gpiochip*",
        grant: Grant::Device {
            allow: "char-gpiochip",
            group: "gpio",
            rule: Rule::Package,
        },
    },
    Access {
        what: "the status LED: the Pi's activity LED (default led.path)",
        path: LED_ACT,
        grant: Grant::LedFiles {
            dir: LED_ACT,
            name: "ACT",
            files: LED_FILES,
        },
    },
    Access {
        what: "the status LED: the Pi's power LED",
        path: "/sys/class/leds/PWR",
        grant: Grant::LedFiles {
            dir: "/sys/class/leds/PWR",
            name: "PWR",
            files: LED_FILES,
        },
    },
    Access {
        what: "the status LED: the activity LED on older kernels",
        path: "/sys/class/leds/led0",
        grant: Grant::LedFiles {
            dir: "/sys/class/leds/led0",
            name: "led0",
            files: LED_FILES,
        },
    },
    Access {
        what: "the status LED: the power LED on older kernels",
        path: "/sys/class/leds/led1",
        grant: Grant::LedFiles {
            dir: "/sys/class/leds/led1",
            name: "led1",
            files: LED_FILES,
        },
    },
    Access {
        what: "the SoC temperature (Pi health)",
        path: THERMAL_ZONE0,
        grant: Grant::Read,
    },
    Access {
        what: "the firmware's throttling flags (Pi health)",
        path: THROTTLED,
        grant: Grant::Read,
    },
    Access {
        what: "1-Wire temperature probes",
        path: "/sys/bus/w1/devices/*/w1_slave",
        grant: Grant::Read,
    },
    Access {
        what: "load, memory and uptime (Pi health)",
        path: "/proc/loadavg",
        grant: Grant::Read,
    },
    Access {
        what: "load, memory and uptime (Pi health)",
        path: "/proc/meminfo",
        grant: Grant::Read,
    },
    Access {
        what: "load, memory and uptime (Pi health)",
        path: "/proc/uptime",
        grant: Grant::Read,
    },
    Access {
        what: "the boot id every reading keeps",
        path: "/proc/sys/kernel/random/boot_id",
        grant: Grant::Read,
    },
    Access {
        what: "whether ICMP probes may use an unprivileged socket",
        path: "/proc/sys/net/ipv4/ping_group_range",
        grant: Grant::Read,
    },
    Access {
        what: "whether the config directory is writable for config.set",
        path: "/proc/self/mountinfo",
        grant: Grant::Read,
    },
];

/// The entry for `path` (a concrete path: `*` in the table matches one
/// path component's number or name).
#[cfg_attr(not(test), allow(dead_code))] // used by the tests
pub(crate) fn entry_for(path: &str) -> Option<&'static Access> {
    ACCESS.iter().find(|a| glob(a.path, path))
}

/// `*` matches any run of characters other than `/`.
#[cfg_attr(not(test), allow(dead_code))] // used by the tests
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len()).any(|i| {
                rest.is_char_boundary(i) && !rest[..i].contains('/') && glob(tail, &rest[i..])
            })
        }
    }
}

#[cfg(test)]
mod tests;
