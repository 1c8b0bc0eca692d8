//! The raw SoftHSM2 rate: AES-256-GCM encryptions of 32 bytes per second through keyplane's
//! PKCS#11 layer (session pool, token key), from `--threads` threads for `--seconds`, with
//! nothing else around it. The load harness (`benches/load/run`) compares `encrypt` with an
//! `hsm` key against this number measured in the same run.
//!
//! Run: `cargo bench --bench hsm_rate -- --threads 16 --seconds 10`. Prints one line:
//! `hsm_raw_aes_gcm_32_ops_per_sec <rate>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyplane::config::{Config, FlagOverrides};
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
    let key = hsm.generate_token_aes_key_with(b"rate", false).unwrap();
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
    let rate = done.load(Ordering::Relaxed) as f64 / seconds as f64;
    println!("hsm_raw_aes_gcm_32_ops_per_sec {rate:.0}");
}
