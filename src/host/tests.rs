//! The shipped unit, udev rules and maintainer script against [`ACCESS`].
//! Each test names what is missing and where to add it.

use super::*;

const UNIT: &str = include_str!("../../systemd/wardgate.service");
const RULES: &str = include_str!("../../packaging/udev/60-wardgate.rules");
const POSTINST: &str = include_str!("../../packaging/debian/postinst");
const CARGO: &str = include_str!("../../Cargo.toml");

/// The `[Service]` settings of a unit, in order (a key may repeat).
fn service(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

fn values<'a>(s: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    s.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A udev rule line as (key, operator, value) triples.
fn udev_rule(line: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let Some(q) = rest.find('"') else { break };
        let (lhs, after) = rest.split_at(q);
        let Some(end) = after[1..].find('"') else {
            break;
        };
        let value = after[1..1 + end].to_owned();
        let lhs = lhs.trim().trim_start_matches(',').trim();
        let op_at = lhs.find(['=', '!', '+', ':']).unwrap_or(lhs.len());
        out.push((lhs[..op_at].to_owned(), lhs[op_at..].to_owned(), value));
        rest = after[end + 2..].trim_start_matches(',').trim();
    }
    out
}

fn rules(text: &str) -> Vec<Vec<(String, String, String)>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(udev_rule)
        .collect()
}

/// udev's match: `|` alternatives, `*`, `?` and `[a-z]` classes.
fn udev_match(pattern: &str, s: &str) -> bool {
    pattern
        .split('|')
        .any(|p| udev_glob(p.as_bytes(), s.as_bytes()))
}

fn udev_glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| udev_glob(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && udev_glob(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(close) = p.iter().position(|&c| c == b']') else {
                return false;
            };
            let class = &p[1..close];
            let Some(&c) = s.first() else { return false };
            let hit = class
                .windows(3)
                .any(|w| w[1] == b'-' && w[0] <= c && c <= w[2])
                || class.contains(&c);
            hit && udev_glob(&p[close + 1..], &s[1..])
        }
        Some(&c) => s.first() == Some(&c) && udev_glob(&p[1..], &s[1..]),
    }
}

/// A concrete node name for a table path (`/dev/ttyUSB*` -> `ttyUSB0`).
fn example_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).replace('*', "0")
}

fn assignment<'a>(rule: &'a [(String, String, String)], key: &str) -> Option<&'a str> {
    rule.iter()
        .find(|(k, op, _)| k == key && (op == "=" || op == ":="))
        .map(|(_, _, v)| v.as_str())
}

fn matches<'a>(rule: &'a [(String, String, String)], key: &str) -> Option<&'a str> {
    rule.iter()
        .find(|(k, op, _)| k == key && op == "==")
        .map(|(_, _, v)| v.as_str())
}

/// Checks `unit` and `rules` (the package's) against the table; every
/// problem, in words.
fn problems(unit: &str, rules_text: &str) -> Vec<String> {
    let s = service(unit);
    let mut p = Vec::new();
    let allows = values(&s, "DeviceAllow");
    let rw_paths = values(&s, "ReadWritePaths");
    let mut groups: Vec<&str> = values(&s, "SupplementaryGroups")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    groups.extend(values(&s, "Group"));
    let rules = rules(rules_text);
    if values(&s, "DevicePolicy") != ["closed"] {
        p.push("DevicePolicy=closed is gone: the table assumes it".into());
    }
    if values(&s, "ProtectKernelTunables") != ["yes"] {
        p.push("ProtectKernelTunables=yes is gone: the table assumes it".into());
    }
    for a in ACCESS {
        match a.grant {
            Grant::Device { allow, group, rule } => {
                let granted = allows.iter().any(|v| {
                    let mut it = v.split_whitespace();
                    it.next() == Some(allow)
                        && it
                            .next()
                            .is_some_and(|m| m.contains('r') && m.contains('w'))
                });
                if !granted {
                    p.push(format!(
                        "{} ({}): the unit has no `DeviceAllow={allow} rw`",
                        a.path, a.what
                    ));
                }
                if !groups.contains(&group) {
                    p.push(format!(
                        "{} ({}): group {group} is not in the unit's SupplementaryGroups=",
                        a.path, a.what
                    ));
                }
                if rule == Rule::Package {
                    let name = example_name(a.path);
                    let given = rules.iter().any(|r| {
                        matches(r, "KERNEL").is_some_and(|k| udev_match(k, &name))
                            && assignment(r, "GROUP") == Some(group)
                            && assignment(r, "MODE")
                                .is_some_and(|m| m.ends_with("60") || m.ends_with("70"))
                    });
                    if !given {
                        p.push(format!(
                            "{} ({}): no rule in 60-wardgate.rules gives {name} GROUP=\"{group}\" with group read-write MODE",
                            a.path, a.what
                        ));
                    }
                }
            }
            Grant::LedFiles { dir, name, files } => {
                if !rw_paths.iter().any(|v| v.trim_start_matches('-') == dir) {
                    p.push(format!(
                        "{} ({}): the unit has no `ReadWritePaths=-{dir}` (the LED's own directory: systemd follows its link into /sys/devices; /sys/class/leds alone does not make it writable)",
                        a.path, a.what
                    ));
                }
                let given = rules.iter().any(|r| {
                    matches(r, "SUBSYSTEM") == Some("leds")
                        && matches(r, "KERNEL").is_some_and(|k| udev_match(k, name))
                        && files.iter().all(|f| {
                            let file = format!("/sys%p/{f}");
                            let runs: Vec<&str> = r
                                .iter()
                                .filter(|(k, _, _)| k == "RUN")
                                .map(|(_, _, v)| v.as_str())
                                .collect();
                            runs.iter().any(|v| {
                                v.starts_with("/bin/chgrp wardgate ")
                                    && v.split_whitespace().any(|w| w == file)
                            }) && runs.iter().any(|v| {
                                v.starts_with("/bin/chmod g+w ")
                                    && v.split_whitespace().any(|w| w == file)
                            })
                        })
                });
                if !given {
                    p.push(format!(
                        "{} ({}): no leds rule in 60-wardgate.rules gives group wardgate write access to {files:?} of {name}",
                        a.path, a.what
                    ));
                }
            }
            Grant::Read => {
                if !(a.path.starts_with("/sys/") || a.path.starts_with("/proc/")) {
                    p.push(format!(
                        "{}: a read-only entry must be under /sys or /proc",
                        a.path
                    ));
                }
                for v in values(&s, "InaccessiblePaths") {
                    let v = v.trim_start_matches('-');
                    if a.path.starts_with(v) {
                        p.push(format!("{}: hidden by InaccessiblePaths={v}", a.path));
                    }
                }
            }
        }
    }
    // Nothing granted that the table does not explain.
    for v in &allows {
        let what = v.split_whitespace().next().unwrap_or_default();
        if !ACCESS
            .iter()
            .any(|a| matches!(a.grant, Grant::Device { allow, .. } if allow == what))
        {
            p.push(format!(
                "DeviceAllow={v}: not in the table (src/host/mod.rs)"
            ));
        }
    }
    for v in &rw_paths {
        let path = v.trim_start_matches('-');
        if !ACCESS
            .iter()
            .any(|a| matches!(a.grant, Grant::LedFiles { dir, .. } if dir == path))
        {
            p.push(format!(
                "ReadWritePaths={v}: not in the table (src/host/mod.rs)"
            ));
        }
    }
    p
}

#[test]
fn the_shipped_unit_and_rules_grant_every_entry_and_nothing_else() {
    let p = problems(UNIT, RULES);
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn a_missing_grant_is_caught() {
    // The gpiomem line out of the unit, the class directory instead of the
    // LED's own, the LED rule out of the package's rules, gpio out of the
    // groups: each is named.
    let cases = [
        (
            UNIT.replace("DeviceAllow=/dev/gpiomem rw\n", ""),
            RULES.to_owned(),
            "/dev/gpiomem (",
        ),
        (
            UNIT.replace(
                "ReadWritePaths=-/sys/class/leds/ACT\n",
                "ReadWritePaths=/sys/class/leds\n",
            ),
            RULES.to_owned(),
            "ReadWritePaths=-/sys/class/leds/ACT",
        ),
        (
            UNIT.to_owned(),
            RULES
                .lines()
                .filter(|l| !l.contains("SUBSYSTEM==\"leds\""))
                .collect::<Vec<_>>()
                .join("\n"),
            "no leds rule",
        ),
        (
            UNIT.replace(
                "SupplementaryGroups=dialout gpio",
                "SupplementaryGroups=dialout",
            ),
            RULES.to_owned(),
            "group gpio is not",
        ),
        (
            UNIT.replace(
                "DeviceAllow=char-ttyS rw",
                "DeviceAllow=char-ttyS rw\nDeviceAllow=/dev/mem rw",
            ),
            RULES.to_owned(),
            "DeviceAllow=/dev/mem rw: not in the table",
        ),
        (
            UNIT.to_owned(),
            RULES.replace("KERNEL==\"gpiomem|gpiomem0\"", "KERNEL==\"gpiomem\""),
            "/dev/gpiomem0 (",
        ),
    ];
    for (unit, rules, want) in cases {
        let p = problems(&unit, &rules);
        assert!(
            p.iter().any(|l| l.contains(want)),
            "wanted a problem with {want:?}, got {p:#?}"
        );
    }
}

#[test]
fn the_package_installs_the_rules_and_the_groups() {
    assert!(
        CARGO.contains(r#"["packaging/udev/60-wardgate.rules", "lib/udev/rules.d/", "644"]"#),
        "Cargo.toml's deb assets must install 60-wardgate.rules into /lib/udev/rules.d"
    );
    let mut groups: Vec<&str> = ACCESS
        .iter()
        .filter_map(|a| match a.grant {
            Grant::Device { group, .. } => Some(group),
            _ => None,
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let usermod = POSTINST
        .lines()
        .find(|l| l.trim_start().starts_with("usermod -a -G "))
        .expect("postinst adds wardgate to its groups");
    for g in groups {
        assert!(
            POSTINST.contains(&format!("groupadd --system {g}")),
            "postinst must create group {g}"
        );
        assert!(
            usermod.contains(g),
            "postinst's usermod must add wardgate to {g}: {usermod}"
        );
    }
}

#[test]
fn the_paths_the_code_opens_by_default_are_in_the_table() {
    let status = crate::status::config::LedConfig::default();
    let system = crate::source::system_config::SystemConfig::automatic();
    for p in [
        status.path.display().to_string(),
        system.thermal_path.display().to_string(),
        system.throttled_path.display().to_string(),
        format!("{W1_DEVICES}/28-0316a2795aff/w1_slave"),
        "/dev/ttyUSB0".into(),
        "/dev/gpiochip0".into(),
        "/dev/gpiochip4".into(),
        "/dev/gpiomem".into(),
    ] {
        assert!(entry_for(&p).is_some(), "{p} is not in the table");
    }
    assert!(entry_for("/dev/mem").is_none());
    assert!(
        entry_for("/dev/ttyUSB0/x").is_none(),
        "* stays in one component"
    );
}

#[test]
fn udev_patterns_match_as_udev_does() {
    for (p, s, want) in [
        ("gpiomem|gpiomem0", "gpiomem0", true),
        ("gpiomem|gpiomem0", "gpiomem1", false),
        ("gpiochip[0-9]*", "gpiochip12", true),
        ("gpiochip[0-9]*", "gpiochipx", false),
        ("ACT|PWR|led0|led1", "PWR", true),
        ("tty[A-Z]*[0-9]", "ttyUSB0", true),
    ] {
        assert_eq!(udev_match(p, s), want, "{p} ~ {s}");
    }
}

#[test]
fn the_unit_lets_the_daemon_read_the_clock_state_and_not_set_it() {
    // clock::kernel_synced() reads the NTP state with glibc's adjtimex(),
    // which is the clock_adjtime system call since glibc 2.31 (the first
    // VM run with adjtimex alone allowed still read "unsynced").
    // ProtectClock= would filter both.
    let s = service(UNIT);
    assert!(
        values(&s, "ProtectClock").is_empty(),
        "ProtectClock= filters adjtimex and clock_adjtime"
    );
    let allowed: Vec<&str> = values(&s, "SystemCallFilter")
        .iter()
        .filter(|v| !v.starts_with('~'))
        .flat_map(|v| v.split_whitespace())
        .collect();
    for call in ["adjtimex", "clock_adjtime"] {
        assert!(
            allowed.contains(&call),
            "SystemCallFilter= must allow {call}"
        );
    }
    // ... and without CAP_SYS_TIME nothing can set the clock.
    assert_eq!(values(&s, "CapabilityBoundingSet"), [""]);
    assert!(values(&s, "AmbientCapabilities").is_empty());
}
