//! The benchmark's worker: an empty handler, run until `--messages` have been processed (then
//! it prints the rate as JSON), or with `--messages 0` until SIGTERM (the idle measurement).

use std::time::{Duration, Instant};

use courier_client::{Job, Worker};
use serde::de::IgnoredAny;

use crate::args::Args;
use crate::worker::pool;

pub async fn main(args: Args) -> Result<(), String> {
    let conninfo = args.str("conninfo")?;
    let queue = args.str("queue")?;
    let concurrency: usize = args.num("concurrency", 8)?;
    let batch: i32 = args.num("batch", 1)?;
    let messages: u64 = args.num("messages", 0)?;
    let pool = pool(&conninfo, "courier-bench-worker", concurrency + 1)?;
    let worker = Worker::<IgnoredAny>::builder(pool, queue)
        .concurrency(concurrency)
        .batch_size(batch)
        .visibility_timeout(Duration::from_secs(30))
        .wait(args.ms("wait-ms", 10_000)?)
        .handler_timeout(Duration::from_secs(20))
        .build(|_job: Job<IgnoredAny>| async { Ok(()) })
        .map_err(|e| e.to_string())?;
    let metrics = worker.metrics();
    let handle = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());
    if messages == 0 {
        return run.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string());
    }
    // Timed from the first lease to the last ack, as pgbench times its transactions.
    while metrics.snapshot().leased == 0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let start = Instant::now();
    let mut done = 0;
    while done < messages {
        tokio::time::sleep(Duration::from_micros(200)).await;
        done = metrics.snapshot().processed;
    }
    let seconds = start.elapsed().as_secs_f64();
    handle.shutdown();
    run.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    let m = metrics.snapshot();
    println!(
        "{}",
        serde_json::json!({"messages": done, "seconds": seconds, "msgs_per_s": done as f64 / seconds,
                           "failed": m.failed, "lease_lost": m.lease_lost})
    );
    Ok(())
}
