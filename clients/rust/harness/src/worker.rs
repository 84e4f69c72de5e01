//! A worker process whose handler does what each message's payload asks (sleep, fail, panic,
//! sleep inside the database) and records it in `harness.events`: a `start` row as soon as it
//! runs (committed at once) and a `done` row when it succeeds (in exactly-once mode, in the
//! transaction that acks). Prints its counters as JSON on stdout when it stops.

use std::sync::Arc;
use std::time::Duration;

use courier_client::deadpool_postgres::{Manager, Pool};
use courier_client::tokio_postgres::{self, NoTls};
use courier_client::{HandlerError, Job, Transaction, Worker};
use serde::Deserialize;

use crate::args::Args;

pub const EVENTS_DDL: &str = "
CREATE SCHEMA IF NOT EXISTS harness;
CREATE TABLE IF NOT EXISTS harness.events (
    queue text NOT NULL, id int8 NOT NULL, n int8 NOT NULL, attempt int NOT NULL,
    worker text NOT NULL, event text NOT NULL, last_error text,
    lease_expires_at timestamptz, at timestamptz NOT NULL DEFAULT clock_timestamp());
";

#[derive(Deserialize)]
pub struct Task {
    pub n: i64,
    #[serde(default)]
    pub sleep_ms: u64,
    /// Sleep only while the attempt is at most this (0: always).
    #[serde(default)]
    pub sleep_attempts: i32,
    /// Sleep with `pg_sleep` in the handler's transaction (exactly-once mode).
    #[serde(default)]
    pub db_sleep: bool,
    /// `error`, `poison`, `panic` or `retry:<ms>` (null: none).
    #[serde(default)]
    pub fail: Option<String>,
    /// Fail only while the attempt is at most this (0: always).
    #[serde(default)]
    pub fail_attempts: i32,
    /// On attempt 1, let the lease run out and lease the message from another session (then
    /// give it back), so that this handler's lease is lost by the time it returns.
    #[serde(default)]
    pub steal: bool,
}

pub fn pool(conninfo: &str, app: &str, size: usize) -> Result<Pool, String> {
    let mut config: tokio_postgres::Config = conninfo.parse().map_err(|e| format!("conninfo: {e}"))?;
    config.application_name(app);
    config.connect_timeout(Duration::from_secs(5));
    Pool::builder(Manager::new(config, NoTls)).max_size(size).build().map_err(|e| e.to_string())
}

struct Ctx {
    queue: String,
    name: String,
    log: Pool,
}

impl Ctx {
    /// Best effort: a fault may kill this connection too; the scenarios do not count on it.
    async fn start(&self, job: &Job<Task>) {
        let m = &job.message;
        let r = async {
            let c = self.log.get().await.map_err(|e| e.to_string())?;
            c.execute(
                "INSERT INTO harness.events (queue, id, n, attempt, worker, event, last_error, lease_expires_at) \
                 VALUES ($1, $2, $3, $4, $5, 'start', $6, $7)",
                &[&self.queue, &m.id, &m.payload.n, &m.attempt, &self.name, &m.last_error, &m.lease_expires_at],
            )
            .await
            .map_err(|e| e.to_string())
        };
        if let Err(e) = r.await {
            tracing::warn!(error = %e, "could not record the start");
        }
    }

    const DONE: &'static str = "INSERT INTO harness.events (queue, id, n, attempt, worker, event, lease_expires_at) \
                                VALUES ($1, $2, $3, $4, $5, 'done', $6)";

    fn done_params<'a>(&'a self, job: &'a Job<Task>) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 6] {
        let m = &job.message;
        [&self.queue, &m.id, &m.payload.n, &m.attempt, &self.name, &m.lease_expires_at]
    }
}

fn applies(limit: i32, attempt: i32) -> bool {
    limit == 0 || attempt <= limit
}

async fn behave(ctx: &Ctx, job: &Job<Task>, tx: Option<&Transaction<'_>>) -> Result<(), HandlerError> {
    let t = job.payload();
    let attempt = job.message.attempt;
    if t.steal && attempt == 1 {
        let c = ctx.log.get().await.map_err(HandlerError::retry)?;
        c.execute("SELECT courier.extend($1, '1 microsecond')", &[&job.message.receipt]).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stolen =
            courier_client::lease(&c, &ctx.queue, &Default::default()).await.map_err(HandlerError::retry)?;
        assert_eq!(stolen.len(), 1, "the message to steal");
        let back = courier_client::NackOptions::retry_in(Duration::ZERO).with_error("stolen");
        courier_client::nack(&c, stolen[0].receipt, &back).await.map_err(HandlerError::retry)?;
    }
    if t.sleep_ms > 0 && applies(t.sleep_attempts, attempt) {
        match tx {
            Some(tx) if t.db_sleep => {
                tx.execute("SELECT pg_sleep($1)", &[&(t.sleep_ms as f64 / 1000.0)]).await?;
            }
            _ => tokio::time::sleep(Duration::from_millis(t.sleep_ms)).await,
        }
    }
    if let Some(fail) = &t.fail
        && applies(t.fail_attempts, attempt)
    {
        let n = t.n;
        match fail.as_str() {
            "error" => return Err(HandlerError::retry(format!("boom n={n}"))),
            "poison" => return Err(HandlerError::poison(format!("poison n={n}"))),
            "panic" => panic!("panic n={n}"),
            other => {
                let ms: u64 = other.strip_prefix("retry:").and_then(|v| v.parse().ok()).unwrap_or(1000);
                return Err(HandlerError::retry_in(Duration::from_millis(ms), format!("later n={n}")));
            }
        }
    }
    Ok(())
}

pub async fn main(args: Args) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let conninfo = args.str("conninfo")?;
    let queue = args.str("queue")?;
    let name = args.str("name")?;
    let concurrency: usize = args.num("concurrency", 2)?;
    let exactly_once = args.opt("mode").as_deref() == Some("tx");
    let pool = pool(&conninfo, &format!("courier-harness-w-{name}"), concurrency + 1)?;
    let ctx = Arc::new(Ctx {
        queue: queue.clone(),
        name,
        log: crate::worker::pool(&conninfo, "courier-harness-log", 2)?,
    });

    let builder = Worker::<Task>::builder(pool, queue)
        .concurrency(concurrency)
        .batch_size(args.num("batch", 1)?)
        .group_batch(args.num("group-batch", 1)?)
        .visibility_timeout(args.ms("vt-ms", 5000)?)
        .wait(args.ms("wait-ms", 2000)?)
        .handler_timeout(args.ms("timeout-ms", 4000)?)
        .grace_period(args.ms("grace-ms", 3000)?)
        .heartbeat(!args.flag("no-heartbeat"))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(1000));
    let worker = if exactly_once {
        builder.build_exactly_once(move |tx, job| {
            let ctx = ctx.clone();
            Box::pin(async move {
                ctx.start(&job).await;
                behave(&ctx, &job, Some(tx)).await?;
                tx.execute(Ctx::DONE, &ctx.done_params(&job)).await?;
                Ok(())
            })
        })
    } else {
        builder.build(move |job: Job<Task>| {
            let ctx = ctx.clone();
            async move {
                ctx.start(&job).await;
                behave(&ctx, &job, None).await?;
                let c = ctx.log.get().await.map_err(HandlerError::retry)?;
                c.execute(Ctx::DONE, &ctx.done_params(&job)).await?;
                Ok(())
            }
        })
    }
    .map_err(|e| e.to_string())?;
    let metrics = worker.metrics();
    let result = worker.run().await;
    let m = metrics.snapshot();
    println!(
        "{}",
        serde_json::json!({
            "leased": m.leased, "processed": m.processed, "failed": m.failed, "timed_out": m.timed_out,
            "lease_lost": m.lease_lost, "released": m.released, "reconnects": m.reconnects,
            "error": result.as_ref().err().map(|e| e.to_string()),
        })
    );
    result.map_err(|e| e.to_string())
}
