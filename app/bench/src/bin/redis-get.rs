//! `redis-get`: Redis' own `GET` throughput on this machine, for context in `make bench` (the cache-hit ceiling
//! cannot beat it). It replaces `redis-benchmark -t get`, which takes a password only on its command line (`-a`),
//! where `ps` shows it to every local user: this one reads its URL, password included, from `APP_REDIS_URL` in
//! its environment. The app's Redis user may only touch `app:*`, so the key read is one of the app's own entries.
//!
//! `redis-get --key KEY [--connections N] [--requests N]`: N connections (32), each with one `GET` in flight at a
//! time, no pipelining, all on one thread (as redis-benchmark's defaults and its single event loop), until N
//! requests (200000) have been answered. Prints one JSON object: requests, seconds, rps. Bench-only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bb8_redis::redis;

fn usage() -> ! {
    eprintln!(
        "usage: APP_REDIS_URL=redis://user:password@host:port redis-get --key KEY [--connections N] [--requests N]"
    );
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (mut key, mut connections, mut requests) = (None, 32u64, 200_000u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        let number = || value.parse().unwrap_or_else(|_| usage());
        match arg.as_str() {
            "--key" => key = Some(value.clone()),
            "--connections" => connections = number(),
            "--requests" => requests = number(),
            _ => usage(),
        }
    }
    let key = key.unwrap_or_else(|| usage());
    let url = std::env::var("APP_REDIS_URL").unwrap_or_else(|_| usage());
    let client = redis::Client::open(url).expect("APP_REDIS_URL must be a redis:// URL");

    let mut conns = Vec::new();
    for _ in 0..connections.max(1) {
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| fail(&format!("cannot connect to Redis: {e}")));
        conns.push(conn);
    }
    // A missing key is a cheaper GET than a hit: measure only what the ceiling's hits cost Redis.
    let first: Option<Vec<u8>> = redis::Cmd::get(&key)
        .query_async(&mut conns[0])
        .await
        .unwrap_or_else(|e| fail(&format!("GET {key} failed: {e}")));
    if first.is_none() {
        fail(&format!("{key} is not in Redis"));
    }

    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (issued, cmd) = (issued.clone(), redis::Cmd::get(&key));
            tokio::spawn(async move {
                while issued.fetch_add(1, Ordering::Relaxed) < requests {
                    let _: Vec<u8> = cmd.query_async(&mut conn).await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        if let Err(e) = task.await.expect("a GET task panicked") {
            fail(&format!("GET {key} failed: {e}"));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"requests": requests, "seconds": seconds, "rps": requests as f64 / seconds})
    );
}

fn fail(message: &str) -> ! {
    eprintln!("redis-get: {message}");
    std::process::exit(1);
}
