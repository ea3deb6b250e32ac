//! wardgate: an edge telemetry gateway for ward service centres.
//!
//! Data runs one way: sources -> spool -> sinks. Status only observes.

// An item public inside a room the crate keeps to itself must say so
// (`pub(crate)`): visibility shows the rooms.
#![warn(unreachable_pub)]

pub mod app;
pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub(crate) mod events;
pub(crate) mod host;
pub(crate) mod ids;
pub mod model;
pub(crate) mod power;
pub mod provision;
pub(crate) mod sink;
pub mod source;
pub mod spool;
pub mod status;
pub(crate) mod telemetry;
pub(crate) mod tick;
pub(crate) mod tls;
pub(crate) mod types;

/// The security contact is set once, as the package's `Maintainer`
/// (Cargo.toml, `[package.metadata.deb] maintainer`), and SECURITY.md must
/// send reporters to the same address: a builder who changes one and not
/// the other learns it here, before a reporter writes to a dead mailbox.
#[cfg(test)]
mod security_contact {
    const CARGO: &str = include_str!("../Cargo.toml");
    const SECURITY: &str = include_str!("../SECURITY.md");

    /// The address in the package's `Maintainer` field (`Name <address>`).
    fn maintainer_address() -> String {
        let cargo: toml::Table = toml::from_str(CARGO).expect("Cargo.toml parses");
        let m = cargo["package"]["metadata"]["deb"]["maintainer"]
            .as_str()
            .expect("[package.metadata.deb] maintainer is set");
        let addr = m
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(a, _)| a.trim())
            .unwrap_or_else(|| panic!("maintainer {m:?} is not \"Name <address>\""));
        assert!(addr.contains('@'), "maintainer address {addr:?}");
        addr.to_owned()
    }

    #[test]
    fn security_md_gives_the_package_maintainer_address() {
        let addr = maintainer_address();
        assert!(
            SECURITY.contains(&format!("<{addr}>")),
            "SECURITY.md must send reporters to <{addr}>, the address in Cargo.toml's \
             [package.metadata.deb] maintainer: set both (docs/packaging.md, \"The security contact\")"
        );
    }
}
