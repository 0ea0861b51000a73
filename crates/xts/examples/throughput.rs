//! Single-thread AES-256-XTS throughput over 4 KiB data units, in-place, for bench/xts.
//! Usage: throughput [seconds, default 3]; prints bytes per second.

use std::time::{Duration, Instant};

use atrest_xts::{XtsKey, KEY_LEN};
use zeroize::Zeroizing;

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let key: Zeroizing<[u8; KEY_LEN]> = Zeroizing::new(std::array::from_fn(|i| (i * 7 + 1) as u8));
    let mut xts = XtsKey::new(&key).expect("a valid key");
    // 1 MiB of units, reused: the data stays in cache, as `openssl speed` measures.
    let mut buf = vec![0x5au8; 1 << 20];
    let run = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut unit = 0u64;
    while start.elapsed() < run {
        for chunk in buf.chunks_mut(4096) {
            xts.encrypt(unit, chunk).expect("whole units");
            unit += 1;
        }
        bytes += buf.len() as u64;
    }
    println!("{:.0}", bytes as f64 / start.elapsed().as_secs_f64());
}
