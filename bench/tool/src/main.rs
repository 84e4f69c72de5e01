//! courier-bench: the parts of the benchmark pgbench cannot do.
//!
//!   courier-bench install-pgmq <socket-dir> <port> <user> <dbname>
//!       Installs pgmq 1.13 from the SQL embedded in the pgmq crate (no download).
//!   courier-bench latency <conninfo> <system> <consumers> <rate> <seconds>
//!       A producer enqueues `rate` messages per second (one per transaction) while `consumers`
//!       sessions wait for them; reports the time from the producer sending COMMIT to a consumer
//!       receiving the message. Systems: courier (lease with wait), pgmq100 / pgmq10
//!       (read_with_poll at its default 100 ms and at 10 ms), notify (a plain SKIP LOCKED table,
//!       consumers LISTEN and dequeue on each notification, with a 1 s fallback poll).
//!   courier-bench idle-cpu <conninfo> <waiters> <seconds>
//!       `waiters` sessions wait on an empty courier queue in a loop; reports the CPU the server
//!       processes serving them used, from /proc/<pid>/stat, as a percentage of one core.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_postgres::{AsyncMessage, Client, NoTls};

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn connect(conninfo: &str) -> Result<Client, Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("install-pgmq") => {
            let options = sqlx::postgres::PgConnectOptions::new()
                .socket(&args[2])
                .port(args[3].parse()?)
                .username(&args[4])
                .database(&args[5]);
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(options).await?;
            pgmq::install::install_sql_from_embedded(&pool).await?;
            println!("pgmq installed from the crate's embedded SQL");
        }
        Some("latency") => {
            let rate: f64 = args[5].parse()?;
            let report = latency(&args[2], &args[3], args[4].parse()?, rate, args[6].parse()?).await?;
            println!("{report}");
        }
        Some("idle-cpu") => {
            let report = idle_cpu(&args[2], args[3].parse()?, args[4].parse()?).await?;
            println!("{report}");
        }
        _ => {
            eprintln!("usage: courier-bench install-pgmq SOCKETDIR PORT USER DBNAME | latency CONNINFO SYSTEM CONSUMERS RATE SECONDS | idle-cpu CONNINFO WAITERS SECONDS");
            std::process::exit(2);
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx]
}

async fn setup(conninfo: &str, system: &str) -> Result<(), Error> {
    let c = connect(conninfo).await?;
    match system {
        "courier" => {
            c.batch_execute(
                "SELECT courier.drop_queue('lat', if_exists => true); SELECT courier.create_queue('lat');",
            )
            .await?
        }
        "pgmq100" | "pgmq10" => {
            c.batch_execute("SELECT pgmq.drop_queue('lat') FROM pgmq.list_queues() WHERE queue_name = 'lat'; SELECT pgmq.create('lat');")
                .await?
        }
        "notify" => {
            c.batch_execute(
                "DROP TABLE IF EXISTS bench_notify_q; \
                 CREATE TABLE bench_notify_q (id bigserial PRIMARY KEY, vt timestamptz NOT NULL DEFAULT clock_timestamp(), payload jsonb NOT NULL); \
                 CREATE INDEX ON bench_notify_q (vt);",
            )
            .await?
        }
        other => return Err(format!("unknown system {other}").into()),
    }
    Ok(())
}

/// One consumer: receives messages and records (sequence number, arrival instant).
async fn consume(
    conninfo: String,
    system: String,
    stop: Instant,
    arrivals: Arc<Mutex<Vec<(i64, Instant)>>>,
) -> Result<(), Error> {
    let (client, mut connection) = tokio_postgres::connect(&conninfo, NoTls).await?;
    let (notify_tx, mut notify_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(msg)) = stream.next().await {
            if let AsyncMessage::Notification(_) = msg {
                let _ = notify_tx.send(());
            }
        }
    });
    let lease_sql = match system.as_str() {
        "courier" => "SELECT (payload->>'seq')::int8, receipt::text FROM courier.lease('lat', wait => '1 second')",
        "pgmq100" => "SELECT (message->>'seq')::int8, msg_id::text FROM pgmq.read_with_poll('lat', 30, 1, 1, 100)",
        "pgmq10" => "SELECT (message->>'seq')::int8, msg_id::text FROM pgmq.read_with_poll('lat', 30, 1, 1, 10)",
        _ => "WITH c AS (SELECT id FROM bench_notify_q WHERE vt <= clock_timestamp() ORDER BY vt LIMIT 1 FOR UPDATE SKIP LOCKED) \
              DELETE FROM bench_notify_q q USING c WHERE q.id = c.id RETURNING (q.payload->>'seq')::int8, q.id::text",
    };
    let ack_sql = match system.as_str() {
        "courier" => Some("SELECT courier.ack($1::text::uuid)"),
        "pgmq100" | "pgmq10" => Some("SELECT pgmq.delete('lat', $1::text::int8)"),
        _ => None,
    };
    if system == "notify" {
        client.batch_execute("LISTEN bench_notify").await?;
    }
    let lease = client.prepare(lease_sql).await?;
    let ack = match ack_sql {
        Some(s) => Some(client.prepare(s).await?),
        None => None,
    };
    while Instant::now() < stop {
        let rows = client.query(&lease, &[]).await?;
        let now = Instant::now();
        if rows.is_empty() {
            if system == "notify" {
                // Wait for a notification, or poll again after a second.
                let _ = tokio::time::timeout(Duration::from_secs(1), notify_rx.recv()).await;
                while notify_rx.try_recv().is_ok() {}
            }
            continue;
        }
        for row in &rows {
            let seq: i64 = row.get(0);
            arrivals.lock().await.push((seq, now));
            if let Some(ack) = &ack {
                let handle: String = row.get(1);
                client.execute(ack, &[&handle]).await?;
            }
        }
    }
    Ok(())
}

async fn latency(conninfo: &str, system: &str, consumers: usize, rate: f64, seconds: u64) -> Result<String, Error> {
    setup(conninfo, system).await?;
    let start = Instant::now();
    let stop = start + Duration::from_secs(seconds) + Duration::from_secs(2);
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for _ in 0..consumers {
        handles.push(tokio::spawn(consume(conninfo.to_string(), system.to_string(), stop, arrivals.clone())));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let producer = connect(conninfo).await?;
    let enqueue = match system {
        "courier" => producer.prepare("SELECT courier.enqueue('lat', jsonb_build_object('seq', $1::int8))").await?,
        "pgmq100" | "pgmq10" => producer.prepare("SELECT pgmq.send('lat', jsonb_build_object('seq', $1::int8))").await?,
        _ => producer.prepare("INSERT INTO bench_notify_q (payload) VALUES (jsonb_build_object('seq', $1::int8))").await?,
    };
    let notify = producer.prepare("SELECT pg_notify('bench_notify', '')").await?;
    let mut sent: HashMap<i64, Instant> = HashMap::new();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let produce_until = Instant::now() + Duration::from_secs(seconds);
    let mut next = Instant::now();
    let mut seq = 0i64;
    while Instant::now() < produce_until {
        seq += 1;
        producer.batch_execute("BEGIN").await?;
        producer.execute(&enqueue, &[&seq]).await?;
        if system == "notify" {
            producer.execute(&notify, &[]).await?;
        }
        sent.insert(seq, Instant::now());
        producer.batch_execute("COMMIT").await?;
        next += interval;
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        }
    }
    for h in handles {
        h.await??;
    }
    let arrivals = arrivals.lock().await;
    let mut ms: Vec<f64> = arrivals
        .iter()
        .filter_map(|(seq, at)| sent.get(seq).map(|s| at.saturating_duration_since(*s).as_secs_f64() * 1000.0))
        .collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let received = ms.len();
    Ok(format!(
        "{{\"system\": \"{system}\", \"consumers\": {consumers}, \"rate\": {rate}, \"sent\": {}, \"received\": {received}, \
         \"p50_ms\": {:.3}, \"p90_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
        sent.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 90.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN)
    ))
}

fn proc_cpu_ticks(pid: i32) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').ok_or("bad stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse()?;
    let stime: u64 = fields[12].parse()?;
    Ok(utime + stime)
}

async fn idle_cpu(conninfo: &str, waiters: usize, seconds: u64) -> Result<String, Error> {
    let admin = connect(conninfo).await?;
    admin.batch_execute("SELECT courier.drop_queue('idle', if_exists => true); SELECT courier.create_queue('idle');").await?;
    let stop = Instant::now() + Duration::from_secs(seconds + 3);
    let mut pids = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..waiters {
        let c = connect(conninfo).await?;
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
        pids.push(pid);
        handles.push(tokio::spawn(async move {
            while Instant::now() < stop {
                c.query("SELECT count(*) FROM courier.lease('idle', wait => '20 seconds')", &[]).await?;
            }
            Ok::<(), Error>(())
        }));
    }
    // Let them all start waiting, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: u64 = pids.iter().map(|p| proc_cpu_ticks(*p).unwrap_or(0)).sum();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after: u64 = pids.iter().map(|p| proc_cpu_ticks(*p).unwrap_or(0)).sum();
    let elapsed = t0.elapsed().as_secs_f64();
    // /proc reports CPU time in USER_HZ units, which Linux fixes at 100 per second.
    let ticks_per_sec = 100.0;
    let cpu_seconds = (after - before) as f64 / ticks_per_sec;
    for h in handles {
        h.abort();
    }
    Ok(format!(
        "{{\"waiters\": {waiters}, \"seconds\": {elapsed:.1}, \"cpu_seconds\": {cpu_seconds:.3}, \"percent_of_one_core\": {:.3}}}",
        100.0 * cpu_seconds / elapsed
    ))
}
