//! The running config as `config.set` checks a change against it: the
//! new text read and validated like any config, the remote-change policy
//! ([`super::remote_policy`]) applied, and a move to another broker, site
//! or prefix allowed only when the request says so.

use std::path::Path;
use std::time::Duration;

use super::Config;
use crate::command::change::{ChangeCheck, ChangeError};

impl ChangeCheck for Config {
    fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    fn check(
        &self,
        path: &Path,
        new_text: &str,
        allow_broker_change: bool,
    ) -> Result<(String, Duration), ChangeError> {
        use ChangeError::Failed;
        let new = Config::from_toml(new_text).map_err(|e| {
            Failed(format!(
                "the new config is not valid: {}",
                e.problems().join("; ")
            ))
        })?;
        let old_text = std::fs::read(path)
            .map_err(|e| Failed(format!("{}: {e}", path.display())))
            .and_then(|b| {
                String::from_utf8(b).map_err(|_| Failed(format!("{}: not UTF-8", path.display())))
            })?;
        if old_text != new_text {
            let policy_path = self.remote_policy_path();
            let policy = super::remote_policy::Policy::load(&policy_path)
                .map_err(|e| ChangeError::Refused(format!("remote change policy: {e}")))?;
            let refused = policy.refusals(&old_text, self, new_text, &new);
            if !refused.is_empty() {
                let keys: Vec<&str> = refused.iter().map(|r| r.key.as_str()).collect();
                let why: Vec<String> = refused
                    .iter()
                    .map(|r| format!("{}: {}", r.key, r.why))
                    .collect();
                return Err(ChangeError::Refused(format!(
                    "the remote change policy ({}) refuses {}: {}",
                    policy_path.display(),
                    keys.join(", "),
                    why.join("; ")
                )));
            }
        }
        let moved = new.mqtt.host != self.mqtt.host
            || new.mqtt_port() != self.mqtt_port()
            || new.mqtt_tls() != self.mqtt_tls()
            || new.mqtt.prefix != self.mqtt.prefix
            || new.site != self.site;
        if moved && !allow_broker_change {
            return Err(Failed(
                "the new config changes the broker, site or prefix: set args.allow_broker_change = true to allow it"
                    .into(),
            ));
        }
        Ok((old_text, new.commands.confirm_within.get()))
    }
}
