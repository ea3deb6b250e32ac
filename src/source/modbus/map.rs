//! Register maps: which registers to read, in how few requests, and how to
//! turn the words that come back into values. Pure functions, no I/O.

use serde::Deserialize;

/// The Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// Coils (function 01), one bit each.
    Coil,
    /// Discrete inputs (function 02), one bit each.
    Discrete,
    /// Holding registers (function 03).
    Holding,
    /// Input registers (function 04).
    Input,
}

impl Function {
    pub fn code(self) -> u8 {
        match self {
            Function::Coil => 1,
            Function::Discrete => 2,
            Function::Holding => 3,
            Function::Input => 4,
        }
    }

    pub fn is_bits(self) -> bool {
        matches!(self, Function::Coil | Function::Discrete)
    }

    /// The most one request may read (Modbus application protocol 1.1b3).
    fn max_count(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    #[default]
    U16,
    I16,
    U32,
    I32,
    F32,
    /// A coil or discrete input (the only type for those functions).
    Bool,
}

impl DataType {
    fn words(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 | DataType::Bool => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
        }
    }
}

/// Order of the two registers of a 32-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// The register at the lower address holds the high word (Modicon
    /// convention; Eastron meters).
    #[default]
    HighFirst,
    /// The register at the lower address holds the low word.
    LowFirst,
}

/// One value read from a device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// The value's name in telemetry, e.g. `ambient.temperature`.
    pub name: String,
    pub function: Function,
    /// Wire address, 0-based: "30001" in a vendor's table is input
    /// register address 0, "40001" is holding register address 0.
    pub address: i64,
    /// u16 (default for registers), i16, u32, i32, f32; bool for coils and
    /// discrete inputs (their only type, so it can be left out).
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    #[serde(default)]
    pub word_order: WordOrder,
    /// value = raw * scale + offset
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// Unit for people (°C, %, V, kWh); shown by `wardgate check`.
    #[serde(default)]
    pub unit: Option<String>,
    /// Words for people on the local page: Vietnamese (`label`) and
    /// English (`label_en`); without them the page uses its table of value
    /// names, or the name itself.
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub label_en: Option<String>,
}

fn one() -> f64 {
    1.0
}

impl RegisterConfig {
    /// Problems with this register, for config validation.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        for (k, l) in [("label", &self.label), ("label_en", &self.label_en)] {
            if l.as_ref()
                .is_some_and(|l| l.trim().is_empty() || l.chars().count() > 64)
            {
                p.push(format!("{key}.{k}: words of 1 to 64 characters"));
            }
        }
        if !crate::model::valid_value_name(&self.name) {
            p.push(format!(
                "{key}.name: {:?} must be letters, digits, '.', '_' or '-'",
                self.name
            ));
        }
        let last = self.address + i64::from(self.effective_type().words()) - 1;
        if !(0..=65535).contains(&self.address) || last > 65535 {
            p.push(format!(
                "{key}.address: {} is not a wire address (0-65535; register 30001 is input address 0)",
                self.address
            ));
        }
        match (self.function.is_bits(), self.data_type) {
            (true, Some(t)) if t != DataType::Bool => p.push(format!(
                "{key}.type: a {:?} is one bit: use type = \"bool\" (or leave it out)",
                self.function
            )),
            (false, Some(DataType::Bool)) => p.push(format!(
                "{key}.type: \"bool\" is for coils and discrete inputs; registers are u16, i16, u32, i32 or f32"
            )),
            _ => {}
        }
        if !(self.scale.is_finite() && self.scale != 0.0) {
            p.push(format!(
                "{key}.scale: {} must be a non-zero number",
                self.scale
            ));
        }
        if !self.offset.is_finite() {
            p.push(format!("{key}.offset: {} must be a number", self.offset));
        }
        p
    }

    /// Coils and discrete inputs are bools whatever `type` says.
    fn effective_type(&self) -> DataType {
        if self.function.is_bits() {
            DataType::Bool
        } else {
            self.data_type.unwrap_or_default()
        }
    }
}

/// One read request and which values it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub function: Function,
    pub start: u16,
    pub count: u16,
    /// Index into the register list, and offset of its first word in the
    /// block.
    pub fields: Vec<(usize, u16)>,
}

/// Groups registers into as few requests as possible: registers of one
/// function that touch or overlap are read together, up to the protocol's
/// limit per request. Registers are assumed valid (see `problems`).
pub fn plan(regs: &[RegisterConfig]) -> Vec<Block> {
    let mut order: Vec<usize> = (0..regs.len()).collect();
    order.sort_by_key(|&i| (regs[i].function, regs[i].address));
    let mut blocks: Vec<Block> = Vec::new();
    for i in order {
        let r = &regs[i];
        let (Ok(start), words) = (u16::try_from(r.address), r.effective_type().words()) else {
            continue;
        };
        let end = u32::from(start) + u32::from(words);
        if let Some(b) = blocks.last_mut() {
            let b_end = u32::from(b.start) + u32::from(b.count);
            let new_end = end.max(b_end);
            if b.function == r.function
                && u32::from(start) <= b_end
                && new_end - u32::from(b.start) <= u32::from(r.function.max_count())
            {
                // Fits: bounded by max_count above, so the cast is exact.
                b.count = (new_end - u32::from(b.start)) as u16;
                b.fields.push((i, start - b.start));
                continue;
            }
        }
        blocks.push(Block {
            function: r.function,
            start,
            count: words,
            fields: vec![(i, 0)],
        });
    }
    blocks
}

/// A decoded value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoded {
    Num(f64),
    Bool(bool),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// The device sent fewer registers than asked for: counted as a bad
    /// reply.
    #[error("reply too short: {got} word(s), needed {need}")]
    Short { got: usize, need: usize },
    /// A float register holds NaN or infinity (a sensor fault on many
    /// meters), or scaling overflowed: counted, the value is left out.
    #[error("not a number")]
    NotANumber,
}

/// Decodes one register's words (`words` starts at the register).
pub fn decode_words(r: &RegisterConfig, words: &[u16]) -> Result<Decoded, DecodeError> {
    let t = r.effective_type();
    let need = usize::from(t.words());
    if words.len() < need {
        return Err(DecodeError::Short {
            got: words.len(),
            need,
        });
    }
    let pair = || -> u32 {
        let (hi, lo) = match r.word_order {
            WordOrder::HighFirst => (words[0], words[1]),
            WordOrder::LowFirst => (words[1], words[0]),
        };
        (u32::from(hi) << 16) | u32::from(lo)
    };
    let raw = match t {
        DataType::Bool => return Ok(Decoded::Bool(words[0] != 0)),
        DataType::U16 => f64::from(words[0]),
        DataType::I16 => f64::from(words[0] as i16),
        DataType::U32 => f64::from(pair()),
        DataType::I32 => f64::from(pair() as i32),
        DataType::F32 => {
            let f = f32::from_bits(pair());
            if !f.is_finite() {
                return Err(DecodeError::NotANumber);
            }
            // The shortest decimal that reads back as this f32: 231.2, not
            // 231.1999969482422.
            f.to_string().parse::<f64>().unwrap_or(f64::from(f))
        }
    };
    let x = round_sig(raw * r.scale + r.offset);
    if !x.is_finite() {
        // A scale that overflows f64 (validation only asks for a finite,
        // non-zero one): counted as a bad value rather than silently lost.
        return Err(DecodeError::NotANumber);
    }
    Ok(Decoded::Num(x))
}

/// Decodes one coil or discrete input.
pub fn decode_bit(bits: &[bool], offset: u16) -> Result<Decoded, DecodeError> {
    bits.get(usize::from(offset))
        .map(|b| Decoded::Bool(*b))
        .ok_or(DecodeError::Short {
            got: bits.len(),
            need: usize::from(offset) + 1,
        })
}

/// Rounds away binary noise from scaling (235 * 0.1 = 23.500000000000004).
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{x:.11e}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, f: Function, a: i64, t: DataType) -> RegisterConfig {
        RegisterConfig {
            name: name.into(),
            function: f,
            address: a,
            data_type: Some(t),
            word_order: WordOrder::HighFirst,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            label: None,
            label_en: None,
        }
    }

    #[test]
    fn contiguous_registers_share_a_request() {
        let regs = vec![
            reg("h", Function::Input, 2, DataType::U16),
            reg("t", Function::Input, 1, DataType::I16),
            reg("v", Function::Input, 10, DataType::F32),
            reg("w", Function::Holding, 3, DataType::U16),
            reg("x", Function::Input, 12, DataType::F32),
        ];
        let p = plan(&regs);
        assert_eq!(
            p,
            vec![
                Block {
                    function: Function::Holding,
                    start: 3,
                    count: 1,
                    fields: vec![(3, 0)]
                },
                Block {
                    function: Function::Input,
                    start: 1,
                    count: 2,
                    fields: vec![(1, 0), (0, 1)]
                },
                Block {
                    function: Function::Input,
                    start: 10,
                    count: 4,
                    fields: vec![(2, 0), (4, 2)]
                },
            ]
        );
    }

    #[test]
    fn gaps_and_limits_split_requests() {
        // SDM120: 0x0000 and 0x0006 are not contiguous.
        let regs = vec![
            reg("v", Function::Input, 0, DataType::F32),
            reg("a", Function::Input, 6, DataType::F32),
        ];
        assert_eq!(plan(&regs).len(), 2);
        // 126 consecutive u16 registers need two requests.
        let regs: Vec<_> = (0..126)
            .map(|i| reg(&format!("r{i}"), Function::Holding, i, DataType::U16))
            .collect();
        let p = plan(&regs);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].count, p[1].start, p[1].count), (125, 125, 1));
        // Overlapping registers (one word read as two types) share.
        let regs = vec![
            reg("a", Function::Holding, 0, DataType::U32),
            reg("b", Function::Holding, 1, DataType::U16),
        ];
        assert_eq!(plan(&regs)[0].count, 2);
    }

    #[test]
    fn decodes_real_frames() {
        // 01 04 04 00 EB 01 C3 ...: XY-MD02 23.5 degC, 45.1 %
        let mut t = reg("t", Function::Input, 1, DataType::I16);
        t.scale = 0.1;
        assert_eq!(decode_words(&t, &[0x00EB]), Ok(Decoded::Num(23.5)));
        assert_eq!(decode_words(&t, &[0x01C3]), Ok(Decoded::Num(45.1)));
        // Below zero: 0xFF9C = -100 -> -10.0 degC
        assert_eq!(decode_words(&t, &[0xFF9C]), Ok(Decoded::Num(-10.0)));
        // 02 04 04 43 67 33 33 ...: SDM120 231.2 V
        let v = reg("v", Function::Input, 0, DataType::F32);
        assert_eq!(decode_words(&v, &[0x4367, 0x3333]), Ok(Decoded::Num(231.2)));
        // u32 with the low word first: 70000 = 0x0001_1170
        let mut u = reg("u", Function::Holding, 0, DataType::U32);
        u.word_order = WordOrder::LowFirst;
        assert_eq!(
            decode_words(&u, &[0x1170, 0x0001]),
            Ok(Decoded::Num(70000.0))
        );
        let i = reg("i", Function::Holding, 0, DataType::I32);
        assert_eq!(decode_words(&i, &[0xFFFF, 0xFFFE]), Ok(Decoded::Num(-2.0)));
        let mut o = reg("o", Function::Holding, 0, DataType::U16);
        o.scale = 0.01;
        o.offset = -40.0;
        assert_eq!(decode_words(&o, &[6500]), Ok(Decoded::Num(25.0)));
    }

    #[test]
    fn bad_words_are_errors_not_panics() {
        let v = reg("v", Function::Input, 0, DataType::F32);
        assert_eq!(
            decode_words(&v, &[0x4367]),
            Err(DecodeError::Short { got: 1, need: 2 })
        );
        assert_eq!(
            decode_words(&v, &[]),
            Err(DecodeError::Short { got: 0, need: 2 })
        );
        // 0x7FC00000 is NaN, 0x7F800000 infinity.
        assert_eq!(decode_words(&v, &[0x7FC0, 0]), Err(DecodeError::NotANumber));
        assert_eq!(decode_words(&v, &[0x7F80, 0]), Err(DecodeError::NotANumber));
        // Found by fuzz/fuzz_targets/modbus.rs: a huge (finite) scale made
        // -inf, which the source then dropped without counting it.
        let mut big = reg("r5", Function::Input, 218, DataType::U32);
        big.scale = -4.251746153315108e304;
        big.offset = 7.880401239278895e115;
        assert_eq!(
            decode_words(&big, &[0xFFFF, 0xFFFF]),
            Err(DecodeError::NotANumber)
        );
        assert_eq!(
            decode_bit(&[true], 3),
            Err(DecodeError::Short { got: 1, need: 4 })
        );
        assert_eq!(decode_bit(&[false, true], 1), Ok(Decoded::Bool(true)));
    }

    #[test]
    fn config_problems_name_the_key() {
        let mut r = reg("t", Function::Coil, 70000, DataType::F32);
        r.scale = 0.0;
        let p = r.problems("device[0].registers[0]").join("\n");
        assert!(p.contains("registers[0].address: 70000"), "{p}");
        assert!(
            p.contains("type = \\\"bool\\\"") || p.contains("type = \"bool\""),
            "{p}"
        );
        assert!(p.contains("scale"), "{p}");
        let r = reg("bad name!", Function::Input, 65535, DataType::U32);
        let p = r.problems("k").join("\n");
        assert!(p.contains("k.name"), "{p}");
        assert!(p.contains("k.address: 65535"), "{p}");
        assert!(reg("ok", Function::Input, 0, DataType::U16)
            .problems("k")
            .is_empty());
    }
}
