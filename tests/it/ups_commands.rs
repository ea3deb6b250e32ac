//! The UPS's own power-off with return, sent by wardgate over
//! the device's link, against real peers: the APC Smart simulator on a
//! pty, and a real upsd (dummy-ups, which has no `shutdown.return`, and
//! nutdrv_qx on a pty with a Megatec UPS that records what reaches it).
//! The sources run in-process through the crate's API (a DeviceHandle and
//! the kind's run function), as the power monitor will drive them; the
//! technician's side (`wardgate check`) runs the real binary.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wardgate::config::{Config, DeviceConfig};
use wardgate::model::Health;
use wardgate::source::tap::UpsCommand;
use wardgate::source::DeviceHandle;

use crate::common::apc_sim::ApcSim;
use crate::common::megatec_sim::MegatecSim;
use crate::common::nut::{NutServer, CMD_PASSWORD, CMD_USER};
use crate::common::{eventually, wardgate_check, within};

const WAIT: Duration = Duration::from_secs(20);

/// One device of `device` (a `[[device]]` table) running in-process until
/// dropped; its handle takes the commands.
struct Running {
    h: DeviceHandle,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(device: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml(&format!(
            "site = \"s\"\n[spool]\npath = \"{}\"\n{device}",
            dir.path().join("s.db").display()
        ))
        .unwrap();
        let (spool, _) =
            wardgate::spool::Spool::open(&cfg.spool, "s", &[wardgate::spool::Lane::Mqtt]).unwrap();
        let hub = wardgate::status::StatusHub::new("s");
        let dev = cfg.devices[0].clone();
        let h = DeviceHandle::new(dev.id(), dev.kind(), Duration::from_millis(300), spool, hub);
        let cancel = CancellationToken::new();
        let (hh, c) = (h.clone(), cancel.clone());
        let task = tokio::spawn(async move {
            match dev {
                DeviceConfig::ApcSmart(a) => wardgate::source::apc::run(a, hh, c).await,
                DeviceConfig::Nut(n) => wardgate::source::nut::run(n, hh, c).await,
                other => panic!("not a UPS with commands: {}", other.kind()),
            }
        });
        let r = Running {
            h,
            cancel,
            task: Some(task),
            _dir: dir,
        };
        eventually(WAIT, "the device reads ok", || r.h.health() == Health::Ok).await;
        r
    }

    async fn power_off(&self, off_after: Duration) -> Result<String, String> {
        within(
            WAIT,
            "the UPS command is answered",
            self.h.ups_command(UpsCommand::ShutdownReturn { off_after }),
        )
        .await
    }

    /// Polls keep coming after a command: the link is still good.
    async fn still_polling(&self) {
        let mut polls = self.h.polls();
        let n = polls.borrow_and_update().n;
        within(WAIT, "a good poll after the command", async {
            loop {
                polls.changed().await.unwrap();
                let s = polls.borrow_and_update().clone();
                if s.n > n && s.values.is_some() {
                    return;
                }
            }
        })
        .await;
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            within(WAIT, "the device stops", t).await.unwrap();
        }
    }
}

fn apc_device(link: &Path) -> String {
    format!(
        "[[device]]\nid = \"ups1\"\ntype = \"apc-smart\"\nserial = \"{}\"\ninterval = \"300ms\"\ntimeout = \"1s\"\n",
        link.display()
    )
}

fn nut_device(port: u16, ups: &str, password_file: &Path) -> String {
    format!(
        "[[device]]\nid = \"ups2\"\ntype = \"nut\"\nhost = \"127.0.0.1\"\nport = {port}\nups = \"{ups}\"\n\
         interval = \"300ms\"\ntimeout = \"3s\"\nusername = \"{CMD_USER}\"\npassword_file = \"{}\"\n",
        password_file.display()
    )
}

fn password_file(dir: &Path, password: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join("nut.password");
    std::fs::write(&p, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// APC Smart: on battery the grace delay is stepped to the nearest not
/// shorter than asked, then `S`; on mains `@000`; an older model's `*` is
/// an OK; polls go on after each command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apc_smart_power_off_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyAPC");
    let sim = ApcSim::start(&link);
    *sim.status.lock().unwrap() = 0x10; // on battery
    let dev = Running::start(&apc_device(&link)).await;

    let said = dev.power_off(Duration::from_secs(120)).await.unwrap();
    assert!(
        said.contains("grace delay set at 180 s (the nearest not shorter than the 120 s asked")
            && said.contains("then S (soft hibernate, on battery): the UPS answered OK"),
        "{said}"
    );
    assert_eq!(sim.grace_delay(), 180);
    assert_eq!(sim.received(), ["p", "-", "p", "S"]);
    dev.still_polling().await;

    // On mains (the mains came back just before): @000, the delay kept.
    *sim.status.lock().unwrap() = 0x08;
    sim.received.lock().unwrap().clear();
    let said = dev.power_off(Duration::from_secs(150)).await.unwrap();
    assert!(
        said.contains("grace delay kept at 180 s")
            && said.contains("then @000 (hard hibernate, on mains): the UPS answered OK"),
        "{said}"
    );
    assert_eq!(sim.received(), ["p", "@000"]);

    // An older model answers `*`; longer than any value: the longest.
    *sim.status.lock().unwrap() = 0x50; // on battery, low
    sim.star.store(true, Ordering::Relaxed);
    sim.received.lock().unwrap().clear();
    let said = dev.power_off(Duration::from_secs(900)).await.unwrap();
    assert!(
        said.contains("grace delay set at 600 s (the longest this UPS offers; 900 s were asked")
            && said.contains("S (soft hibernate, on battery): the UPS answered OK"),
        "{said}"
    );
    assert_eq!(sim.received(), ["p", "-", "p", "-", "p", "S"]);
    assert_eq!(sim.grace_delay(), 600);
    dev.still_polling().await;
    dev.stop().await;
}

/// dummy-ups offers no `shutdown.return`: upsd's CMD-NOT-SUPPORTED comes
/// back as a clear error, after the delay was set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nut_dummy_ups_has_no_shutdown_return() {
    let nut = NutServer::start(
        "ups.status: OB\nbattery.charge: 40\nups.delay.shutdown: 20\nups.load: 20\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), CMD_PASSWORD);
    let dev = Running::start(&nut_device(nut.port, "dummy", &pw)).await;
    let e = dev.power_off(Duration::from_secs(120)).await.unwrap_err();
    assert!(
        e.contains(
            "INSTCMD shutdown.return: upsd answered ERR CMD-NOT-SUPPORTED: the UPS's driver does not offer it"
        ),
        "{e}"
    );
    dev.still_polling().await;
    dev.stop().await;
}

/// A wrong password: upsd checks it only when it is used, so reading still
/// works; the power-off is refused with words saying what to fix, nothing
/// reaches the UPS, and `wardgate check` says the login is not accepted
/// (exit 69). The right one is accepted. (nutdrv_qx, which offers
/// `shutdown.return`: upsd looks a command up before it checks the user,
/// so with dummy-ups any password gets CMD-NOT-SUPPORTED.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nut_wrong_password_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyQX");
    let ups = MegatecSim::start(&link);
    let nut = qx_server(&link);
    let pw = password_file(dir.path(), "not-the-password");
    let device = nut_device(nut.port, "qx", &pw);

    let dev = Running::start(&device).await;
    let e = dev.power_off(Duration::from_secs(120)).await.unwrap_err();
    assert!(
        e.contains("SET VAR ups.delay.shutdown 120: upsd answered ERR ACCESS-DENIED: wrong password or unknown user")
            && e.contains("INSTCMD shutdown.return: upsd answered ERR ACCESS-DENIED: wrong password or unknown user"),
        "{e}"
    );
    assert!(!e.contains("not-the-password"), "{e}");
    dev.still_polling().await;
    dev.stop().await;
    assert_eq!(
        ups.commands(),
        Vec::<String>::new(),
        "nothing reached the UPS"
    );

    let cfg = dir.path().join("wardgate.toml");
    std::fs::write(&cfg, format!("site = \"s\"\n{device}")).unwrap();
    let (code, out) = wardgate_check(&cfg).await;
    assert_eq!(code, Some(69), "{out}");
    assert!(
        out.contains("device ups2 (nut): ok")
            && out.contains("login: NOT ACCEPTED: upsd refused user \"wardgate\" (ERR ACCESS-DENIED): wrong password"),
        "{out}"
    );
    assert!(
        !out.contains("not-the-password"),
        "the password is never printed:\n{out}"
    );

    // The right password; a file others can read is warned about.
    std::fs::write(&pw, format!("{CMD_PASSWORD}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (code, out) = wardgate_check(&cfg).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("login: ok: upsd accepts user \"wardgate\" (password and actions = SET)")
            && out.contains("ups.delay.shutdown = 30 s"),
        "{out}"
    );
    assert!(
        out.contains("warning: device ups2 password_file")
            && out.contains("readable by other users"),
        "{out}"
    );
    assert!(
        !out.contains(CMD_PASSWORD),
        "the password is never printed:\n{out}"
    );
}

/// upsd with nutdrv_qx reading a Megatec UPS on `link`.
fn qx_server(link: &Path) -> NutServer {
    NutServer::start_driver_with(
        "qx",
        "nutdrv_qx",
        &format!(
            "\tport = {}\n\tprotocol = megatec\n\tpollinterval = 1\n",
            link.display()
        ),
    )
}

/// The whole way through NUT: upsd takes SET VAR ups.delay.shutdown and
/// INSTCMD shutdown.return from the wardgate user, nutdrv_qx turns them
/// into Megatec's `S02R0003` (off in 2 minutes, on 3 minutes after the
/// mains return) and the UPS sees it on the wire; upsd's tracking reports
/// the driver's outcome. A UPS that refuses the command (echoes it) comes
/// back as a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nut_nutdrv_qx_power_off_reaches_the_ups() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyQX");
    let ups = MegatecSim::start(&link);
    let nut = qx_server(&link);
    let pw = password_file(dir.path(), CMD_PASSWORD);
    let dev = Running::start(&nut_device(nut.port, "qx", &pw)).await;

    let said = dev.power_off(Duration::from_secs(120)).await.unwrap();
    assert!(
        said.contains("ups.delay.shutdown set to 120 s (was 30 s): the driver carried it out")
            && said.contains("then INSTCMD shutdown.return: the driver carried it out"),
        "{said}"
    );
    let sent = ups.commands();
    assert!(
        sent.iter().any(|c| c == "S02R0003"),
        "the UPS never saw S02R0003: {sent:?}"
    );

    // The UPS refuses (echoes the command): the driver reports a failure.
    ups.set(|s| s.refuse_shutdown = true);
    let e = dev.power_off(Duration::from_secs(120)).await.unwrap_err();
    assert!(
        e.contains("ups.delay.shutdown is 120 s already")
            && e.contains("INSTCMD shutdown.return: upsd answered ERR FAILED: the driver tried, and the UPS did not take it"),
        "{e}"
    );
    dev.still_polling().await;
    dev.stop().await;
}
