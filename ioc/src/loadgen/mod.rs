//! A load generator: contract-valid traffic (real topics, payloads built
//! with the contract's types and `Envelope::to_vec`) for many sites, from
//! a seed, with planted duplicates, holes (declared the way the gateway
//! declares them, and undeclared), epoch resets, out-of-order backlog and
//! clock corrections. It returns what it planted, the undeclared holes
//! above all: a ledger fed this traffic must report exactly those as
//! unexplained (docs/ioc.md, "The load generator").

mod sim;

use wardgate_contract::{SeqRange, StreamKey};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    pub sites: usize,
    pub seed: u64,
    /// The topic prefix (`mqtt.prefix`).
    pub prefix: String,
    /// Live steps in each quiet stretch (every device sends one sample a
    /// step); more gives more readings per site.
    pub steps: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            sites: 100,
            seed: 1,
            prefix: "ioc".into(),
            steps: 8,
        }
    }
}

/// A configuration the generator cannot follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadgenError {
    /// No site to generate: ask for at least one.
    #[error("sites must be at least 1")]
    NoSites,
    /// The prefix is empty or has a wildcard or a trailing slash: give one
    /// a gateway could use (`mqtt.prefix`).
    #[error("prefix {0:?} is not a topic prefix")]
    BadPrefix(String),
}

/// One MQTT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The gateway's clock when it was sent (ms), for a receive time.
    pub at_ms: i64,
}

/// What was planted, to check a consumer against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planted {
    /// Numbers skipped with nothing said: a ledger must report exactly
    /// these as unexplained once each site's backlog is drained.
    pub undeclared: Vec<(StreamKey, SeqRange)>,
    /// Numbers missing for a reason the gateway gave (dropped and counted,
    /// quarantined, lost while degraded, lost or unused in an unclean
    /// stop, lost with a wiped card's backlog).
    pub declared: u64,
    /// Records sent again with the same content.
    pub duplicates: u64,
    /// Records sent `unsynced` and again `corrected`.
    pub corrected_copies: u64,
    /// Records sent again with other content (contract breaks).
    pub conflicts: u64,
    /// Distinct records sent.
    pub records: u64,
    /// Sites with each scenario: backlog with drops, degraded card, clock
    /// correction, crash, power cut, wiped card, epoch of its own.
    pub scenarios: [u64; 7],
}

impl Planted {
    fn add(&mut self, other: Planted) {
        self.undeclared.extend(other.undeclared);
        self.declared += other.declared;
        self.duplicates += other.duplicates;
        self.corrected_copies += other.corrected_copies;
        self.conflicts += other.conflicts;
        self.records += other.records;
        for (a, b) in self.scenarios.iter_mut().zip(other.scenarios) {
            *a += b;
        }
    }
}

/// The traffic of all sites, interleaved as a broker would deliver it
/// (each site's messages in its own order).
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    pub messages: Vec<Wire>,
    pub planted: Planted,
}

/// Generates the traffic of `cfg.sites` sites.
pub fn generate(cfg: &LoadConfig) -> Result<Traffic, LoadgenError> {
    if cfg.sites == 0 {
        return Err(LoadgenError::NoSites);
    }
    let p = &cfg.prefix;
    if p.is_empty() || p.ends_with('/') || p.contains(['+', '#']) {
        return Err(LoadgenError::BadPrefix(p.clone()));
    }
    let mut per_site = Vec::with_capacity(cfg.sites);
    let mut planted = Planted::default();
    for i in 0..cfg.sites {
        let (msgs, pl) = site(cfg, i);
        planted.add(pl);
        per_site.push(msgs.into_iter());
    }
    // Interleave: a few messages of each site in turn, in a seeded order.
    let mut rng = Rng::new(cfg.seed ^ 0x5eed);
    let total: usize = per_site.iter().map(|m| m.len()).sum();
    let mut messages = Vec::with_capacity(total);
    let mut live: Vec<usize> = (0..per_site.len()).collect();
    while !live.is_empty() {
        let k = rng.below(live.len() as u64) as usize;
        let take = 1 + rng.below(4) as usize;
        let it = &mut per_site[live[k]];
        messages.extend(it.by_ref().take(take));
        if it.len() == 0 {
            live.swap_remove(k);
        }
    }
    Ok(Traffic { messages, planted })
}

/// One site's traffic, in the order its gateway sends it.
pub fn site(cfg: &LoadConfig, index: usize) -> (Vec<Wire>, Planted) {
    sim::Sim::run(cfg, index)
}

/// A small deterministic generator (splitmix64): the same seed gives the
/// same traffic on every machine and version.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_traffic_and_refuses_bad_configs() {
        let cfg = LoadConfig {
            sites: 5,
            ..LoadConfig::default()
        };
        let a = generate(&cfg).unwrap();
        let b = generate(&cfg).unwrap();
        assert_eq!(a.messages, b.messages);
        assert_eq!(a.planted, b.planted);
        let c = generate(&LoadConfig {
            seed: 2,
            ..cfg.clone()
        })
        .unwrap();
        assert_ne!(a.messages, c.messages);
        assert_eq!(
            generate(&LoadConfig {
                sites: 0,
                ..cfg.clone()
            })
            .unwrap_err(),
            LoadgenError::NoSites
        );
        assert!(matches!(
            generate(&LoadConfig {
                prefix: "ioc/#".into(),
                ..cfg
            }),
            Err(LoadgenError::BadPrefix(_))
        ));
    }
}
