//! SNMP value mapping: whatever a router's agent returns (any value type,
//! missing values, counters that wrap, reset or jump) over a few polls maps
//! to values in the contract (interface names made fit), finite rates that
//! are never negative, and link events only on a change (or a WAN found
//! down at start). The uptime and rate helpers never panic.
#![no_main]
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use wardgate::model::{Value, Values};
use wardgate::source::snmp::{self, Change, IfReading, IfState, ObjectValue};

mod common;

fn object(u: &mut Unstructured) -> Result<Option<ObjectValue>> {
    Ok(Some(match u.int_in_range(0..=9u8)? {
        0 => return Ok(None),
        1 => ObjectValue::Integer(if u.arbitrary()? {
            u.int_in_range(1..=7)?
        } else {
            u.arbitrary()?
        }),
        2 => ObjectValue::String(u.arbitrary()?),
        3 => ObjectValue::IpAddress(std::net::Ipv4Addr::from(u.arbitrary::<u32>()?)),
        4 => ObjectValue::Counter32(u.arbitrary()?),
        5 => ObjectValue::Unsigned32(u.arbitrary()?),
        6 => ObjectValue::TimeTicks(u.arbitrary()?),
        7 => ObjectValue::Opaque(u.arbitrary()?),
        _ => ObjectValue::Counter64(u.arbitrary()?),
    }))
}

fn run(u: &mut Unstructured) -> Result<()> {
    // The router's own values.
    let uptime = object(u)?;
    match snmp::uptime_ticks(uptime.as_ref()) {
        Ok(t) => {
            let mut v = Values::new();
            snmp::map_system(t, object(u)?.as_ref(), &mut v);
            common::check_values(&v);
            assert_eq!(v.get("sys.uptime").and_then(Value::as_f64), Some(f64::from(t / 100)));
        }
        Err(e) => assert!(!matches!(uptime, Some(ObjectValue::TimeTicks(_))), "{e}"),
    }
    let (prev, now, elapsed): (u32, u32, u32) = u.arbitrary()?;
    let r = snmp::restarted(prev, now, u64::from(elapsed));
    assert!(!r || now < prev, "a restart needs the uptime to go back");

    // Interfaces named anything the agent says, polled a few times.
    let n = u.int_in_range(1..=4usize)?;
    let mut ifs: Vec<IfState> = Vec::new();
    for index in 0..n {
        let name: String = u.arbitrary()?;
        ifs.push(IfState {
            key: snmp::value_key(&name),
            index: index as u32,
            is_wan: u.arbitrary()?,
            oper: None,
            last: None,
        });
    }
    for _poll in 0..u.int_in_range(1..=6usize)? {
        let secs = match u.int_in_range(0..=2u8)? {
            0 => 0.0,
            1 => f64::from(u.int_in_range(1..=600u32)?),
            _ => f64::from(u.int_in_range(1..=100_000_000u32)?) / 1000.0,
        };
        let restart: bool = u.arbitrary()?;
        let mut v = Values::new();
        let mut changes = Vec::new();
        for st in ifs.iter_mut() {
            let r = IfReading {
                oper: object(u)?,
                in_errors: object(u)?,
                out_errors: object(u)?,
                counters: if u.arbitrary()? {
                    Some((*u.choose(&[32u32, 64])?, object(u)?, object(u)?))
                } else {
                    None
                },
            };
            let was = st.oper;
            let before = changes.len();
            snmp::map_interface(st, &r, secs, restart, &mut v, &mut changes);
            let link = &changes[before..];
            assert!(link.len() <= 1);
            if let Some(Change::Link { up, wan, .. }) = link.first() {
                let Some(ObjectValue::Integer(o)) = r.oper else {
                    panic!("a link event without ifOperStatus");
                };
                assert_eq!(*up, o == 1);
                assert_eq!(*wan, st.is_wan);
                match was {
                    Some(w) => assert_ne!(w == 1, o == 1, "an event without a change"),
                    None => assert!(st.is_wan && o != 1),
                }
            }
        }
        common::check_values(&v);
        for (name, x) in &v.0 {
            if name.ends_with("_bps") {
                let x = x.as_f64().expect("a rate is a number");
                assert!(x >= 0.0, "{name} = {x}");
                assert!(!restart && secs > 0.0);
            }
        }
    }
    let (a, b, s): (u64, u64, u32) = u.arbitrary()?;
    if let Some(r) = snmp::rate_bps(a, b, 32, f64::from(s) / 1000.0, false) {
        assert!(r.is_finite() && r >= 0.0);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
