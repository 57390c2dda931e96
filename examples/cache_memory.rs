//! Memory per entry and hit cost of decision-cache candidates (issue 11's memory target):
//!
//!     cargo run --release --example cache_memory -- CANDIDATE [ENTRIES]
//!
//! CANDIDATE: `decision` (gatehouse's `DecisionCache`), `moka` (moka's future cache, one TTL),
//! `moka-expiry` (moka with per-entry expiry, as gatehouse had it), `quick` (quick_cache alone),
//! `hashmap` (a plain `HashMap`, the floor). Each run is one process, so RSS growth is that
//! candidate's: `ENTRIES` (100000) distinct u128 keys with a distinct 128-byte `Arc` value each
//! and an expiry instant, then 1,000,000 hits. Prints one line: bytes per entry (RSS growth
//! divided by entries, the values' own 128 B + allocator overhead included) and ns per hit.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::cache::{DecisionCache, Expiring};

/// A value the size of a cached decision's allocation.
#[derive(Clone)]
struct Value(#[allow(dead_code)] Arc<[u8; 112]>);

impl Expiring for Value {
    fn is_allow(&self) -> bool {
        true
    }
}

fn value(i: u128) -> Value {
    Value(Arc::new([i as u8; 112]))
}

/// Resident kB of this process.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Keys spread like keyed hashes.
fn key(i: u128) -> u128 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
}

struct MokaExpiry;
impl moka::Expiry<u128, Value> for MokaExpiry {
    fn expire_after_create(&self, _: &u128, _: &Value, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(3600))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let candidate = args.next().unwrap_or_else(|| "decision".to_owned());
    let n: u128 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    const HITS: u128 = 1_000_000;
    let hour = Duration::from_secs(3600);
    let before = rss_kb();
    let (after, hit) = match candidate.as_str() {
        "decision" => {
            let cache = DecisionCache::<Value>::with_ttls(hour, hour, n as u64);
            for i in 0..n {
                let v = value(i);
                let _ = cache
                    .get_or_try_insert(key(i), async { Ok::<_, Infallible>(v) })
                    .await;
            }
            let after = rss_kb();
            let start = Instant::now();
            for i in 0..HITS {
                let r = cache
                    .get_or_try_insert(key(i % n), async { Ok::<_, Infallible>(value(0)) })
                    .await;
                black_box(r.map(|(_, computed)| computed).ok());
            }
            (after, start.elapsed())
        }
        "moka" | "moka-expiry" => {
            let builder = moka::future::Cache::<u128, Value>::builder().max_capacity(n as u64);
            let cache = if candidate == "moka" {
                builder.time_to_live(hour).build()
            } else {
                builder.expire_after(MokaExpiry).build()
            };
            for i in 0..n {
                let v = value(i);
                let _ = cache
                    .entry(key(i))
                    .or_try_insert_with(async { Ok::<_, Infallible>(v) })
                    .await;
            }
            cache.run_pending_tasks().await;
            let after = rss_kb();
            let start = Instant::now();
            for i in 0..HITS {
                let r = cache
                    .entry(key(i % n))
                    .or_try_insert_with(async { Ok::<_, Infallible>(value(0)) })
                    .await;
                black_box(r.map(|e| e.is_fresh()).ok());
            }
            (after, start.elapsed())
        }
        "quick" => {
            let cache = quick_cache::sync::Cache::<u128, (Value, Instant)>::new(n as usize);
            let until = Instant::now() + hour;
            for i in 0..n {
                cache.insert(key(i), (value(i), until));
            }
            let after = rss_kb();
            let start = Instant::now();
            for i in 0..HITS {
                black_box(cache.get(&key(i % n)).map(|(_, t)| t > Instant::now()));
            }
            (after, start.elapsed())
        }
        "hashmap" => {
            let mut map = HashMap::<u128, (Value, Instant)>::new();
            let until = Instant::now() + hour;
            for i in 0..n {
                map.insert(key(i), (value(i), until));
            }
            let after = rss_kb();
            let start = Instant::now();
            for i in 0..HITS {
                black_box(map.get(&key(i % n)).map(|(_, t)| *t > Instant::now()));
            }
            (after, start.elapsed())
        }
        other => {
            eprintln!("unknown candidate {other}: decision, moka, moka-expiry, quick, hashmap");
            std::process::exit(2);
        }
    };
    println!(
        "{candidate}: {n} entries, {:.0} B per entry (RSS {} -> {} kB), {:.0} ns per hit",
        (after.saturating_sub(before) * 1024) as f64 / n as f64,
        before,
        after,
        hit.as_nanos() as f64 / HITS as f64
    );
}
