//! What a provisioning card holds: the files taken from the boot
//! partition, which of them are secrets, and the limits on each.

/// The configuration's name on the boot partition.
pub(super) const CONFIG_NAME: &str = "wardgate.toml";
/// The result file left on the boot partition.
pub(super) const RESULT_NAME: &str = "wardgate-provisioning.txt";
/// Extra files taken along: name on the boot partition -> name in /etc/wardgate.
pub(super) const EXTRA_FILES: &[(&str, &str)] = &[
    ("wardgate-ca.crt", "ca.crt"),
    ("wardgate-client.crt", "client.crt"),
    ("wardgate-client.key", "client.key"),
    ("wardgate-mqtt.password", "mqtt.password"),
    ("wardgate-web.password", "web.password"),
    ("wardgate-nut.password", "nut.password"),
    ("wardgate-influx.token", "influx.token"),
];
/// The extra files that are secrets: they leave the card at every boot,
/// installed or not. (Certificates are public and stay on the card when the
/// configuration is refused, ready for the next attempt.)
pub(super) const SECRET_FILES: &[&str] = &[
    "wardgate-client.key",
    "wardgate-mqtt.password",
    "wardgate-web.password",
    "wardgate-nut.password",
    "wardgate-influx.token",
];
/// Where boot partitions are mounted: current Raspberry Pi OS, then older.
pub const BOOT_DIRS: &[&str] = &["/boot/firmware", "/boot"];
/// The largest `wardgate.toml` taken from the card.
pub(super) const CONFIG_MAX: u64 = 1 << 20;
/// The largest certificate, key or password file taken from the card.
pub(super) const EXTRA_MAX: u64 = 64 << 10;
/// Directory under /etc/wardgate (mode 0700) where the secrets of a card
/// whose configuration was not installed are kept, one subdirectory per
/// boot, for root to recover; never read by wardgate itself.
pub(super) const QUARANTINE_DIR: &str = "quarantine";
/// Quarantine batches kept: a card refused at every boot cannot fill /etc.
pub(super) const QUARANTINE_KEEP: usize = 5;
