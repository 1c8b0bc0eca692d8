//! The raw SoftHSM2 rate: AES-256-GCM encryptions of 32 bytes per second through keyplane's
//! PKCS#11 layer (session pool), from `--threads` threads for `--seconds` each, with nothing
//! else around it, under two handles of one token key:
//! - its session copy, which is what keyplane's data plane uses on SoftHSM2 (see
//!   `Keyring::data_plane_handle`); the load harness (`benches/load/run`) compares `encrypt`
//!   with an `hsm` key against this rate, measured in the same run;
//! - the token object itself, which SoftHSM2 rereads from disk at every use.
//!
//! Run: `cargo bench --bench hsm_rate -- --threads 16 --seconds 10`. Prints two lines:
//! `hsm_raw_aes_gcm_32_ops_per_sec <rate>` (session copy) and
//! `hsm_raw_token_object_aes_gcm_32_ops_per_sec <rate>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyplane::config::{Config, FlagOverrides};
use keyplane::hsm::Obj;
use keyplane::hsm::{token, Hsm, GCM_IV_LEN};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench` (no filter) asks targets to list themselves; nothing to list.
        return;
    }
    let threads = arg("--threads", 2).max(1);
    let seconds = arg("--seconds", 5).max(1);
    let dir = tempfile::tempdir().unwrap();
    let flags = FlagOverrides {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let config = Config::load(None, flags).unwrap();
    keyplane::bootstrap::prepare_data_dir(&config.data_dir).unwrap();
    let conf = token::prepare_embedded_softhsm(&config.data_dir).unwrap();
    // Sound: no other thread exists yet.
    std::env::set_var("SOFTHSM2_CONF", conf);
    let hsm = Arc::new(Hsm::open(&config).unwrap());
    let (key, _) = hsm.generate_token_aes_key_with(b"rate", 32, false).unwrap();
    let copy = hsm.session_copy(key).unwrap();
    // The session copy first: it is what keyplane's data plane uses on an in-process token.
    let rate = ops_per_sec(&hsm, copy, threads, seconds);
    println!("hsm_raw_aes_gcm_32_ops_per_sec {rate:.0}");
    let rate = ops_per_sec(&hsm, key, threads, seconds);
    println!("hsm_raw_token_object_aes_gcm_32_ops_per_sec {rate:.0}");
}

/// AES-GCM encryptions of 32 bytes per second under `key` from `threads` threads.
fn ops_per_sec(hsm: &Arc<Hsm>, key: Obj, threads: u64, seconds: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (hsm, done) = (hsm.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < until {
                    hsm.gcm_encrypt(key, &[1u8; GCM_IV_LEN], b"aad", &[0u8; 32])
                        .unwrap();
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / seconds as f64
}
