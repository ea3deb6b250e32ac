//! Dry contacts on GPIO inputs (`type = "gpio"`): door, water leak, smoke,
//! mains present; and pulse counting (an energy meter's S0 output).
//!
//! Hardware sits behind [`ContactInput`]; the Pi implementation uses rppal's
//! interrupt thread, the fake is fed from a channel. Debouncing is done here:
//! a change counts once the level has held for `debounce`.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gpio_config::{GpioConfig, GpioInput, GpioMode, Pull};
use super::DeviceHandle;
use crate::model::{Severity, Values};

#[derive(Debug, thiserror::Error)]
pub(crate) enum GpioError {
    /// No GPIO chip (not a Raspberry Pi) or the pin is taken: the gateway
    /// does not start with this configuration; the technician fixes it.
    #[error("GPIO {pin}: {message}")]
    Unavailable { pin: u8, message: String },
}

/// One input pin, named after embedded-hal's input methods.
pub(crate) trait ContactInput: Send {
    /// The level now (true = high).
    fn is_high(&self) -> bool;
    /// Waits for the next edge; None when the input is gone.
    fn wait_for_edge(&mut self) -> impl std::future::Future<Output = Option<()>> + Send;
}

/// A fake input for tests: set levels through the sender.
#[cfg_attr(not(test), allow(dead_code))] // used by the tests
pub(crate) struct FakeInput {
    level: std::sync::Arc<std::sync::atomic::AtomicBool>,
    edges: mpsc::UnboundedReceiver<()>,
}

/// The test's end of a [`FakeInput`].
#[derive(Clone)]
#[cfg_attr(not(test), allow(dead_code))] // used by the tests
pub(crate) struct FakeInputHandle {
    level: std::sync::Arc<std::sync::atomic::AtomicBool>,
    edges: mpsc::UnboundedSender<()>,
}

impl FakeInput {
    #[cfg_attr(not(test), allow(dead_code))] // used by the tests
    pub(crate) fn new(initial: bool) -> (FakeInput, FakeInputHandle) {
        let level = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(initial));
        let (tx, rx) = mpsc::unbounded_channel();
        (
            FakeInput {
                level: level.clone(),
                edges: rx,
            },
            FakeInputHandle { level, edges: tx },
        )
    }
}

impl FakeInputHandle {
    #[cfg_attr(not(test), allow(dead_code))] // used by the tests
    pub(crate) fn set(&self, high: bool) {
        let old = self.level.swap(high, std::sync::atomic::Ordering::SeqCst);
        if old != high {
            let _ = self.edges.send(());
        }
    }
}

impl ContactInput for FakeInput {
    fn is_high(&self) -> bool {
        self.level.load(std::sync::atomic::Ordering::SeqCst)
    }
    async fn wait_for_edge(&mut self) -> Option<()> {
        self.edges.recv().await
    }
}

/// A Raspberry Pi GPIO input through rppal; edges come from rppal's
/// interrupt thread over a channel.
pub(crate) struct PiInput {
    pin: rppal::gpio::InputPin,
    edges: mpsc::UnboundedReceiver<()>,
}

impl PiInput {
    pub(crate) fn open(bcm: u8, pull: Pull) -> Result<PiInput, GpioError> {
        let err = |m: String| GpioError::Unavailable {
            pin: bcm,
            message: m,
        };
        let gpio = rppal::gpio::Gpio::new()
            .map_err(|e| err(format!("{e} (this is not a Raspberry Pi, or /dev/gpiomem is not accessible: is the service user in the gpio group?)")))?;
        let pin = gpio.get(bcm).map_err(|e| err(e.to_string()))?;
        let mut pin = match pull {
            Pull::Up => pin.into_input_pullup(),
            Pull::Down => pin.into_input_pulldown(),
            Pull::None => pin.into_input(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        pin.set_async_interrupt(rppal::gpio::Trigger::Both, None, move |_| {
            let _ = tx.send(());
        })
        .map_err(|e| err(e.to_string()))?;
        Ok(PiInput { pin, edges: rx })
    }
}

impl ContactInput for PiInput {
    fn is_high(&self) -> bool {
        self.pin.is_high()
    }
    async fn wait_for_edge(&mut self) -> Option<()> {
        self.edges.recv().await
    }
}

/// Active (alarm) state of an input from its level.
fn active(input: &GpioInput, high: bool) -> bool {
    high != input.active_low
}

fn word(input: &GpioInput, is_active: bool) -> String {
    if is_active {
        input.states[0].clone()
    } else {
        input.states[1].clone()
    }
}

/// Watches one input: debounced changes become events and state values;
/// in counter mode, debounced rising edges are counted.
pub(crate) async fn watch_input<I: ContactInput>(
    input: GpioInput,
    mut pin: I,
    h: DeviceHandle,
    state: std::sync::Arc<std::sync::Mutex<Values>>,
    cancel: CancellationToken,
) {
    let mut stable = active(&input, pin.is_high());
    let mut count: u64 = 0;
    let set_state = |stable: bool, count: u64| {
        let mut v = state.lock().unwrap_or_else(|p| p.into_inner());
        match input.mode {
            GpioMode::Contact => {
                v.set(&input.name, word(&input, stable));
                v.set(&format!("{}.active", input.name), stable);
            }
            GpioMode::Counter => {
                v.num(&format!("{}.count", input.name), count as f64);
            }
        }
    };
    set_state(stable, count);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            e = pin.wait_for_edge() => if e.is_none() { return },
        }
        // Debounce: wait until no edge came for `debounce`, then read.
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                e = pin.wait_for_edge() => if e.is_none() { return } else { continue },
                _ = tokio::time::sleep(input.debounce.get()) => break,
            }
        }
        let now = active(&input, pin.is_high());
        if now == stable {
            continue;
        }
        stable = now;
        match input.mode {
            GpioMode::Contact => {
                let w = word(&input, now);
                let mut v = Values::new();
                v.set(&input.name, w.clone());
                let sev = if now { input.severity } else { Severity::Info };
                let code = format!("{}.{}", input.name, w);
                let label = input.label.as_deref().unwrap_or(&input.name);
                let msg = crate::events::GPIO_CONTACT.render(&[("label", &label), ("state", &w)]);
                h.event(sev, &code, &msg, v);
            }
            GpioMode::Counter => {
                if now {
                    count += 1;
                }
            }
        }
        set_state(stable, count);
    }
}

/// Runs every input of a `gpio` device on the Pi.
pub(crate) async fn run(cfg: GpioConfig, h: DeviceHandle, cancel: CancellationToken) {
    let state = std::sync::Arc::new(std::sync::Mutex::new(Values::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for input in cfg.inputs.clone() {
        match PiInput::open(input.pin.get(), input.pull) {
            Ok(pin) => {
                tasks.spawn(watch_input(
                    input,
                    pin,
                    h.clone(),
                    state.clone(),
                    cancel.clone(),
                ));
            }
            Err(e) => {
                h.fault(&e.to_string());
                return;
            }
        }
    }
    report(cfg.interval, h, state, cancel).await;
}

/// Publishes the inputs' state every interval.
pub(crate) async fn report(
    interval: Duration,
    h: DeviceHandle,
    state: std::sync::Arc<std::sync::Mutex<Values>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let v = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        h.sample(v);
    }
}

/// Checks that the GPIO chip is there, for start-up and `wardgate check`.
pub(crate) fn probe(cfg: &GpioConfig) -> Result<Values, GpioError> {
    let mut v = Values::new();
    for input in &cfg.inputs {
        let pin = PiInput::open(input.pin.get(), input.pull)?;
        v.set(&input.name, word(input, active(input, pin.is_high())));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn input(mode: &str, active_low: bool) -> GpioInput {
        let cfg = Config::from_toml(&format!(
            "site = \"s\"\n[[device]]\nid = \"c\"\ntype = \"gpio\"\n[[device.inputs]]\npin = 17\nname = \"door\"\nstates = [\"open\", \"closed\"]\ndebounce = \"50ms\"\nmode = \"{mode}\"\nactive_low = {active_low}\n"
        ))
        .unwrap();
        match &cfg.devices[0] {
            crate::config::DeviceConfig::Gpio(g) => g.inputs[0].clone(),
            _ => unreachable!(),
        }
    }

    async fn setup(
        inp: GpioInput,
        initial: bool,
    ) -> (
        FakeInputHandle,
        std::sync::Arc<std::sync::Mutex<Values>>,
        crate::status::StatusHub,
        CancellationToken,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml(&format!(
            "site = \"s\"\n[spool]\npath = \"{}\"\n",
            dir.path().join("s.db").display()
        ))
        .unwrap();
        let (spool, _) =
            crate::spool::Spool::open(&cfg.spool, "s", &[crate::spool::Lane::Mqtt]).unwrap();
        let hub = crate::status::StatusHub::new("s");
        let h = DeviceHandle::new("c", "gpio", Duration::from_secs(1), spool, hub.clone());
        let (fake, handle) = FakeInput::new(initial);
        let state = std::sync::Arc::new(std::sync::Mutex::new(Values::new()));
        let cancel = CancellationToken::new();
        tokio::spawn(watch_input(inp, fake, h, state.clone(), cancel.clone()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        (handle, state, hub, cancel, dir)
    }

    fn codes(hub: &crate::status::StatusHub) -> Vec<String> {
        hub.get()
            .events
            .iter()
            .rev()
            .map(|e| e.code.clone())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn bounce_within_the_window_is_one_event() {
        let (pin, state, hub, cancel, _d) = setup(input("contact", false), false).await;
        assert_eq!(state.lock().unwrap().get("door"), Some(&"closed".into()));
        // Contact bounces for 30 ms, then stays closed-circuit (high = open).
        for i in 0..6 {
            pin.set(i % 2 == 0);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pin.set(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(codes(&hub), vec!["door.open"]);
        assert_eq!(state.lock().unwrap().get("door"), Some(&"open".into()));
        // A glitch shorter than the debounce that returns to the same level: nothing.
        pin.set(false);
        tokio::time::sleep(Duration::from_millis(10)).await;
        pin.set(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(codes(&hub), vec!["door.open"]);
        pin.set(false);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(codes(&hub), vec!["door.open", "door.closed"]);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn active_low_inverts() {
        // Active low: a low level is "open".
        let (pin, state, hub, cancel, _d) = setup(input("contact", true), true).await;
        assert_eq!(state.lock().unwrap().get("door"), Some(&"closed".into()));
        pin.set(false);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(codes(&hub), vec!["door.open"]);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn pulses_are_counted() {
        let (pin, state, hub, cancel, _d) = setup(input("counter", false), false).await;
        for _ in 0..7 {
            pin.set(true);
            tokio::time::sleep(Duration::from_millis(80)).await;
            pin.set(false);
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
        assert_eq!(
            state
                .lock()
                .unwrap()
                .get("door.count")
                .and_then(|v| v.as_f64()),
            Some(7.0)
        );
        assert!(codes(&hub).is_empty(), "counting raises no events");
        cancel.cancel();
    }

    #[test]
    fn no_gpio_chip_is_a_clear_error() {
        let cfg = GpioConfig {
            id: "c".into(),
            interval: Duration::from_secs(1),
            inputs: vec![input("contact", false)],
            threshold: vec![],
        };
        // The test machines are not Raspberry Pis: the message says which pin
        // and why.
        let e = probe(&cfg).unwrap_err();
        assert!(e.to_string().contains("GPIO 17"), "{e}");
    }
}
