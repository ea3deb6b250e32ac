//! Modbus register maps and register decoding: any valid register list is
//! planned into requests within the protocol's limits (125 registers, 2000
//! bits, addresses below 65536) that carry every register, and any words a
//! slave sends back decode to a finite number, a flag or an error.
#![no_main]
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use wardgate::source::modbus::map::{
    self, DataType, Decoded, Function, RegisterConfig, WordOrder,
};

mod common;

fn words(t: DataType) -> u32 {
    match t {
        DataType::U32 | DataType::I32 | DataType::F32 => 2,
        _ => 1,
    }
}

fn register(u: &mut Unstructured, i: usize) -> Result<RegisterConfig> {
    let function = *u.choose(&[
        Function::Coil,
        Function::Discrete,
        Function::Holding,
        Function::Input,
    ])?;
    let data_type = match u.int_in_range(0..=6u8)? {
        0 => None,
        1 => Some(DataType::U16),
        2 => Some(DataType::I16),
        3 => Some(DataType::U32),
        4 => Some(DataType::I32),
        5 => Some(DataType::F32),
        _ => Some(DataType::Bool),
    };
    // Mostly near each other (so that they share requests), sometimes
    // anywhere, sometimes out of range.
    let address = match u.int_in_range(0..=3u8)? {
        0 => i64::from(u.arbitrary::<u16>()?),
        1 => u.arbitrary::<i64>()?,
        _ => i64::from(u.int_in_range(0..=300u16)?),
    };
    let num = |u: &mut Unstructured| -> Result<f64> {
        Ok(match u.int_in_range(0..=3u8)? {
            0 => 1.0,
            1 => 0.0,
            2 => f64::from(u.int_in_range(-1000..=1000i32)?) / 100.0,
            _ => u.arbitrary::<f64>()?,
        })
    };
    Ok(RegisterConfig {
        name: format!("r{i}"),
        function,
        address,
        data_type,
        word_order: if u.arbitrary()? {
            WordOrder::HighFirst
        } else {
            WordOrder::LowFirst
        },
        scale: num(u)?,
        offset: num(u)?,
        unit: None,
        label: None,
        label_en: None,
    })
}

fn run(u: &mut Unstructured) -> Result<()> {
    let n = u.int_in_range(1..=300usize)?;
    let mut regs = Vec::new();
    for i in 0..n {
        let r = register(u, i)?;
        // What config validation lets through.
        if r.problems("k").is_empty() {
            regs.push(r);
        }
    }
    let blocks = map::plan(&regs);
    let mut seen = vec![0u32; regs.len()];
    for b in &blocks {
        let max = if b.function.is_bits() { 2000 } else { 125 };
        assert!(b.count >= 1 && b.count <= max, "{b:?}");
        assert!(u32::from(b.start) + u32::from(b.count) <= 65536, "{b:?}");
        for &(i, off) in &b.fields {
            let r = &regs[i];
            seen[i] += 1;
            assert_eq!(r.function, b.function);
            assert_eq!(i64::from(b.start) + i64::from(off), r.address);
            let w = if r.function.is_bits() { 1 } else { words(r.data_type.unwrap_or_default()) };
            assert!(u32::from(off) + w <= u32::from(b.count), "{r:?} outside {b:?}");
        }
        // What the slave sends back: any words or bits, maybe too few.
        let got = usize::from(b.count).saturating_sub(u.int_in_range(0..=2usize)?);
        for &(i, off) in &b.fields {
            let r = &regs[i];
            let d = if b.function.is_bits() {
                let bits: Vec<bool> = (0..got).map(|_| u.arbitrary()).collect::<Result<_>>()?;
                map::decode_bit(&bits, off)
            } else {
                let w: Vec<u16> = (0..got).map(|_| u.arbitrary()).collect::<Result<_>>()?;
                let d = map::decode_words(r, w.get(usize::from(off)..).unwrap_or(&[]));
                // Integers with no scaling come through exactly.
                if let (Ok(Decoded::Num(x)), 1.0, 0.0) = (&d, r.scale, r.offset) {
                    let w = &w[usize::from(off)..];
                    let pair = |hi: u16, lo: u16| (u32::from(hi) << 16) | u32::from(lo);
                    let p = match r.word_order {
                        WordOrder::HighFirst => w.get(1).map(|lo| pair(w[0], *lo)),
                        WordOrder::LowFirst => w.get(1).map(|hi| pair(*hi, w[0])),
                    };
                    let want = match r.data_type.unwrap_or_default() {
                        DataType::U16 => Some(f64::from(w[0])),
                        DataType::I16 => Some(f64::from(w[0] as i16)),
                        DataType::U32 => p.map(f64::from),
                        DataType::I32 => p.map(|p| f64::from(p as i32)),
                        _ => None,
                    };
                    if let Some(want) = want {
                        assert_eq!(*x, want, "{r:?} {w:?}");
                    }
                }
                d
            };
            if let Ok(Decoded::Num(x)) = d {
                assert!(x.is_finite(), "{r:?} decoded to {x}");
            }
            if let Ok(Decoded::Bool(_)) = d {
                assert!(r.function.is_bits() || r.data_type == Some(DataType::Bool));
            }
        }
    }
    for (i, r) in regs.iter().enumerate() {
        assert_eq!(seen[i], 1, "{r:?} in {} requests", seen[i]);
        assert!(common::in_contract(&r.name));
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
