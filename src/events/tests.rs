use super::*;
use std::collections::BTreeSet;

#[test]
fn fill_puts_values_in_once() {
    assert_eq!(
        fill("{a} and {b}: {a}", &[("a", &1), ("b", &"x")]),
        "1 and x: 1"
    );
    assert_eq!(fill("{a}", &[("a", &"{b}"), ("b", &2)]), "{b}");
    assert_eq!(fill("{missing} {", &[]), "{missing} {");
    assert_eq!(fill("38.5", &[]), "38.5");
    assert_eq!(fill("{v}", &[("v", &35.0_f64)]), "35");
}

/// A code sent with several wordings has one severity and one set of
/// Vietnamese words, so the page and the docs can speak of the code.
#[test]
fn one_code_one_severity_and_one_page_wording() {
    for a in ALL {
        for b in ALL.iter().filter(|b| b.code == a.code) {
            assert_eq!(a.severity, b.severity, "{}", a.code);
            assert_eq!(a.vi, b.vi, "{}", a.code);
        }
    }
    assert_eq!(
        page_vi("ups.on_battery"),
        Some("UPS chuyển sang chạy pin: mất điện lưới")
    );
    assert_eq!(page_vi("threshold.high"), None, "carried in message.vi");
    assert_eq!(page_vi("no.such"), None);
}

/// Every placeholder of a Vietnamese template is one the English
/// template has, so a sender that fills the English fills both.
#[test]
fn vietnamese_templates_need_no_other_values() {
    fn names(t: &str) -> BTreeSet<&str> {
        t.split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(n, _)| n))
            .collect()
    }
    for d in ALL {
        if let Vi::Carried(t) | Vi::Page(t) = d.vi {
            let en = names(d.message);
            for n in names(t) {
                assert!(en.contains(n), "{}: {{{n}}} is not in the English", d.code);
            }
        }
        if let Vi::Page(t) = d.vi {
            assert!(!t.contains('{'), "{}: page words are fixed", d.code);
        }
    }
}

/// The templates render exactly the messages the senders wrote before
/// the catalogue existed (the literals below are copied from them): the
/// English message is part of the contract.
#[test]
fn templates_render_as_the_senders_write_them() {
    let (id, reason) = ("ups1", "no reply within 1 s");
    assert_eq!(
        DEVICE_FAULT.render(&[("device", &id), ("reason", &reason)]),
        format!("{id}: {reason}")
    );
    assert_eq!(
        DEVICE_STALE.render(&[("device", &id), ("reason", &reason)]),
        format!("{id}: {reason}")
    );
    let limit = humantime::format_duration(std::time::Duration::from_millis(1500));
    assert_eq!(
        DEVICE_LOST.render(&[("device", &id), ("limit", &limit)]),
        format!("{} has not answered for {}", id, limit)
    );
    assert_eq!(
        DEVICE_RESTORED.render(&[("device", &id)]),
        format!("{} is answering again", id)
    );
    assert_eq!(
        MODBUS_EXCEPTION.render(&[("device", &id), ("reason", &reason)]),
        format!("{}: {reason}", id)
    );
    let (name, word) = ("pppoe-wan", "down");
    let args: &[(&str, &dyn fmt::Display)] = &[("interface", &name), ("state", &word)];
    assert_eq!(
        WAN_DOWN.render(args),
        format!("The router's WAN interface {name} is {word}: the internet link is down")
    );
    assert_eq!(
        WAN_UP.render(args),
        format!("The router's WAN interface {name} is up again")
    );
    assert_eq!(
        INTERFACE_DOWN.render(args),
        format!("Router interface {name} is {word}")
    );
    assert_eq!(
        INTERFACE_UP.render(args),
        format!("Router interface {name} is up again")
    );
    let (label, w) = ("Cửa phòng máy", "open");
    assert_eq!(
        GPIO_CONTACT.render(&[("label", &label), ("state", &w)]),
        format!("{} {}", label, w)
    );
    let (secs, pending) = (60u64, 1234u64);
    assert_eq!(
        MQTT_STALLED.render(&[("secs", &secs), ("pending", &pending)]),
        format!(
            "The broker has not acknowledged anything for {secs} s while {pending} records wait to be sent; reconnecting."
        )
    );
}

/// The codes in backticks in the first column of docs/mqtt.md's code
/// table.
fn documented_codes() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mqtt.md"),
    )
    .expect("docs/mqtt.md");
    let mut lines = doc.lines().skip_while(|l| !l.starts_with("| code |"));
    assert!(lines.next().is_some(), "docs/mqtt.md has a code table");
    lines
        .skip(1) // |---|
        .take_while(|l| l.starts_with('|'))
        .flat_map(|row| {
            let first = row.split('|').nth(1).unwrap_or("").to_owned();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn docs_list_every_code_and_no_other() {
    let documented = documented_codes();
    let catalogue: BTreeSet<String> = ALL.iter().map(|d| d.code.to_owned()).collect();
    let missing: Vec<_> = catalogue.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "codes of the catalogue not in docs/mqtt.md's table: {missing:?}"
    );
    let unknown: Vec<_> = documented.difference(&catalogue).collect();
    assert!(
        unknown.is_empty(),
        "codes in docs/mqtt.md's table the catalogue lacks: {unknown:?}"
    );
}

/// Local staff read Vietnamese first: every event the gateway words itself
/// has Vietnamese words; only the GPIO contacts, worded by the config, do
/// not.
#[test]
fn every_event_has_vietnamese_but_the_configured_contacts() {
    let without: Vec<&str> = ALL
        .iter()
        .filter(|d| d.vi == Vi::None)
        .map(|d| d.code)
        .collect();
    assert_eq!(
        without,
        vec![GPIO_CONTACT.code],
        "no Vietnamese: {without:?}"
    );
}
