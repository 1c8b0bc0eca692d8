//! A throwaway TPM 2.0 for tests: `swtpm` (a software TPM, from Debian's package) behind
//! `tpm2-abrmd` (the TSS resource manager: tpm2-pkcs11 keeps objects loaded in the TPM, and a
//! TPM holds only three at once without one) on a private D-Bus session bus, and a fresh
//! tpm2-pkcs11 store. keyplane initialises the token itself (`C_InitToken` on the store's
//! empty slot) on its first start, as it does a SoftHSM2 token; nothing is set up by hand.
//! Every process is this value's child and is killed when it is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tpm2-pkcs11 module (Debian's `libtpm2-pkcs11-1`).
pub const MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so";

pub struct SoftTpm {
    children: Vec<Child>,
    /// What a process using the token needs in its environment (keyplane, pkcs11-tool).
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
}

/// A free port whose next is free too: the swtpm TCTI finds the TPM's control channel on the
/// port after its command port. Drawn below the kernel's ephemeral range (32768 and up), where
/// the servers of other tests bind (`127.0.0.1:0`): a port taken from that range and released
/// for swtpm could be handed to a server starting meanwhile (seen once: the test's client
/// then spoke TLS to swtpm).
fn free_port_pair() -> u16 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id();
    (0..2000u32)
        .map(|i| 20_000 + ((seed.wrapping_add(i.wrapping_mul(7919))) % 12_000) as u16)
        .find(|port| {
            std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
        })
        .expect("a free port pair between 20000 and 32000")
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up in 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl SoftTpm {
    /// Start a TPM with its state, bus and store under `dir`.
    pub fn start(dir: &Path) -> SoftTpm {
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let mut tpm = SoftTpm {
            children: Vec::new(),
            env: Vec::new(),
            dir: dir.to_path_buf(),
        };
        let port = free_port_pair();
        tpm.spawn(
            Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", dir.join("state").display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .args(["--flags", "not-need-init,startup-clear"]),
        );
        wait_for("swtpm", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let bus = dir.join("bus");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                bus.display()
            ),
        )
        .unwrap();
        tpm.spawn(
            Command::new("dbus-daemon")
                .arg(format!("--config-file={}", config.display()))
                .arg("--nofork"),
        );
        wait_for("the D-Bus session bus", || bus.exists());
        let address = format!("unix:path={}", bus.display());
        let name = format!("com.intel.tss2.Tabrmd.kp{port}");
        tpm.spawn(
            Command::new("tpm2-abrmd")
                .env("DBUS_SESSION_BUS_ADDRESS", &address)
                .args(["--session", "--allow-root", "--flush-all"])
                .arg(format!("--dbus-name={name}"))
                .arg(format!("--tcti=swtpm:host=127.0.0.1,port={port}")),
        );
        wait_for("tpm2-abrmd", || {
            Command::new("dbus-send")
                .env("DBUS_SESSION_BUS_ADDRESS", &address)
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                ])
                .arg(format!("string:{name}"))
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
        });
        tpm.env = vec![
            ("KEYPLANE_HSM__MODULE".into(), MODULE.into()),
            ("KEYPLANE_HSM__EMBEDDED_SOFTHSM".into(), "false".into()),
            ("DBUS_SESSION_BUS_ADDRESS".into(), address),
            (
                "TPM2_PKCS11_TCTI".into(),
                format!("tabrmd:bus_name={name},bus_type=session"),
            ),
            (
                "TPM2_PKCS11_STORE".into(),
                dir.join("store").display().to_string(),
            ),
        ];
        tpm
    }

    fn spawn(&mut self, cmd: &mut Command) {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        self.children.push(child);
    }

    /// The environment as `(&str, &str)` pairs, with `extra` after it.
    pub fn env_with<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend_from_slice(extra);
        env
    }
}

impl Drop for SoftTpm {
    fn drop(&mut self) {
        // The resource manager first, the TPM last.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
