//! A command's arguments from the command line, in HTTPie's words:
//!
//! - `key=value`: the string `value` (`device=ups1`);
//! - `key:=json`: any JSON value (`seconds:=30`, `allow_broker_change:=true`);
//! - `key=@file`: the file's text as a string (`toml=@/tmp/new.toml`);
//! - one argument that is a JSON object (`'{"device":"ups1"}'`): the args
//!   as they are.
//!
//! A number typed as `seconds=30` stays the string `"30"` (a device may be
//! named `123`): the gateway then rejects it as malformed and
//! [`Args::hint`] says how to send the number. Pure but for reading a
//! `@file`.

use serde_json::{Map, Value};

/// Why the arguments cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// Neither `key=value`, `key:=json`, `key=@file` nor a JSON object:
    /// fix the command line.
    #[error("argument {0:?}: write key=value, key:=json, key=@file or one JSON object")]
    Shape(String),
    /// `key:=…` whose value is not JSON, or a `{…}` that is not an object.
    #[error("argument {arg:?}: not JSON: {why}")]
    Json { arg: String, why: String },
    /// The same key twice: say it once.
    #[error("argument {0:?} is given twice")]
    Twice(String),
    /// A JSON object beside other arguments: give one or the other.
    #[error("a JSON object must be the only argument")]
    Mixed,
    /// `key=@file` whose file cannot be read.
    #[error("argument {key}=@{path}: {why}")]
    File {
        key: String,
        path: String,
        why: String,
    },
}

/// The parsed arguments, and which were typed as strings that read as
/// other JSON (for [`Args::hint`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    pub map: Map<String, Value>,
    /// `key=value` arguments whose value parses as a JSON number or
    /// boolean: sent as strings.
    pub looks_typed: Vec<(String, String)>,
}

impl Args {
    /// Reads the arguments after the op.
    pub fn parse(raw: &[String]) -> Result<Args, ArgsError> {
        let mut out = Args::default();
        if let [one] = raw {
            if one.trim_start().starts_with('{') {
                return match serde_json::from_str::<Value>(one) {
                    Ok(Value::Object(map)) => Ok(Args {
                        map,
                        looks_typed: Vec::new(),
                    }),
                    Ok(_) => Err(ArgsError::Json {
                        arg: one.clone(),
                        why: "not an object".into(),
                    }),
                    Err(e) => Err(ArgsError::Json {
                        arg: one.clone(),
                        why: e.to_string(),
                    }),
                };
            }
        }
        for arg in raw {
            if arg.trim_start().starts_with('{') {
                return Err(ArgsError::Mixed);
            }
            let (key, value) = one(arg, &mut out.looks_typed)?;
            if out.map.insert(key.clone(), value).is_some() {
                return Err(ArgsError::Twice(key));
            }
        }
        Ok(out)
    }

    /// A hint for a rejection that calls the args malformed: the
    /// arguments that went as strings but look like numbers or booleans.
    pub fn hint(&self, reason: &str) -> Option<String> {
        if !reason.contains("malformed args") || self.looks_typed.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .looks_typed
            .iter()
            .map(|(k, v)| format!("{k}={v} sent the string \"{v}\"; {k}:={v} sends {v}"))
            .collect();
        Some(parts.join("; "))
    }
}

/// One `key=value`, `key:=json` or `key=@file`.
fn one(arg: &str, looks_typed: &mut Vec<(String, String)>) -> Result<(String, Value), ArgsError> {
    let Some(eq) = arg.find('=') else {
        return Err(ArgsError::Shape(arg.to_owned()));
    };
    let (left, value) = (&arg[..eq], &arg[eq + 1..]);
    let (key, json) = match left.strip_suffix(':') {
        Some(k) => (k, true),
        None => (left, false),
    };
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(ArgsError::Shape(arg.to_owned()));
    }
    if json {
        let v = serde_json::from_str(value).map_err(|e| ArgsError::Json {
            arg: arg.to_owned(),
            why: e.to_string(),
        })?;
        return Ok((key.to_owned(), v));
    }
    if let Some(path) = value.strip_prefix('@') {
        let text = std::fs::read_to_string(path).map_err(|e| ArgsError::File {
            key: key.to_owned(),
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        return Ok((key.to_owned(), Value::String(text)));
    }
    if matches!(
        serde_json::from_str::<Value>(value),
        Ok(Value::Number(_) | Value::Bool(_))
    ) {
        looks_typed.push((key.to_owned(), value.to_owned()));
    }
    Ok((key.to_owned(), Value::String(value.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(args: &[&str]) -> Result<Args, ArgsError> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Args::parse(&v)
    }

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn each_shape() {
        assert_eq!(parse(&[]).unwrap().map, Map::new());
        let a = parse(&["device=ups1", "seconds:=30", "x:=true", "empty="]).unwrap();
        assert_eq!(
            a.map,
            map(json!({"device":"ups1","seconds":30,"x":true,"empty":""}))
        );
        assert!(a.looks_typed.is_empty());
        // A value with '=' in it keeps it; a key:= with a string.
        let a = parse(&["q=a=b", "s:=\"30\""]).unwrap();
        assert_eq!(a.map, map(json!({"q":"a=b","s":"30"})));
        let a = parse(&[r#"{"device":"ups1","lines":5}"#]).unwrap();
        assert_eq!(a.map, map(json!({"device":"ups1","lines":5})));

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("new.toml");
        std::fs::write(&f, "site = \"x\"\n").unwrap();
        let a = parse(&[&format!("toml=@{}", f.display()), "base_hash=sha256:ab"]).unwrap();
        assert_eq!(a.map["toml"], "site = \"x\"\n");
        let e = parse(&["toml=@/nonexistent/x.toml"]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
    }

    #[test]
    fn a_number_typed_as_a_string_gets_a_hint() {
        let a = parse(&["seconds=30", "device=123", "on=true", "d=ups1"]).unwrap();
        assert_eq!(a.map["seconds"], "30");
        assert_eq!(a.map["device"], "123");
        let h = a
            .hint("malformed args for identify: invalid type: string \"30\", expected u64")
            .unwrap();
        assert!(
            h.contains("seconds=30 sent the string \"30\"; seconds:=30 sends 30"),
            "{h}"
        );
        assert_eq!(a.hint("unknown op \"x\""), None);
        assert_eq!(parse(&["d=ups1"]).unwrap().hint("malformed args"), None);
    }

    #[test]
    fn bad_shapes_are_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["ups1"], "write key=value"),
            (&["=x"], "write key=value"),
            (&["a b=x"], "write key=value"),
            (&["seconds:=thirty"], "not JSON"),
            (&["[1,2]"], "write key=value"),
            (&["{\"a\":"], "not JSON"),
            (&["d=1", "d=2"], "twice"),
            (&["d=1", "{\"a\":1}"], "only argument"),
        ];
        for (args, says) in cases {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }
}
