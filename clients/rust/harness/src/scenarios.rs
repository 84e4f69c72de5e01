//! The fault scenarios: worker processes against a live server, killed, stopped, frozen,
//! disconnected; then a check of what happened to every message, from `harness.events` (what
//! the handlers did), courier's stats and dead letters, and the workers' own counters.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use courier_client::deadpool_postgres::Pool;
use courier_client::{BatchOptions, QueueSettings};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::args::Args;
use crate::worker::{EVENTS_DDL, pool};

type R<T = ()> = Result<T, String>;

fn ensure(cond: bool, what: impl FnOnce() -> String) -> R {
    if cond { Ok(()) } else { Err(what()) }
}

struct Env {
    conninfo: String,
    bin: PathBuf,
    dir: PathBuf,
    db: Pool,
}

/// A worker process.
struct Proc {
    name: String,
    child: Child,
    pid: i32,
    out: PathBuf,
}

impl Proc {
    async fn spawn(env: &Env, name: &str, queue: &str, extra: &[&str]) -> R<Proc> {
        let out = env.dir.join(format!("{name}.out"));
        let err = env.dir.join(format!("{name}.err"));
        let child = Command::new(&env.bin)
            .args(["worker", "--conninfo", &env.conninfo, "--queue", queue, "--name", name])
            .args(extra)
            .env("RUST_LOG", "info,courier_client=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).map_err(|e| e.to_string())?)
            .stderr(std::fs::File::create(&err).map_err(|e| e.to_string())?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {name}: {e}"))?;
        let pid = child.id().ok_or("no pid")? as i32;
        Ok(Proc { name: name.to_string(), child, pid, out })
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with the pid of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(self.pid, sig);
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit (at most `within`) and returns its counters.
    async fn exit(mut self, within: Duration) -> R<Value> {
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(s) => s.map_err(|e| e.to_string())?,
            Err(_) => {
                let _ = self.child.kill().await;
                return Err(format!("{} did not exit within {within:?}", self.name));
            }
        };
        ensure(status.success(), || format!("{} exited with {status} (see {}.err)", self.name, self.name))?;
        let out = std::fs::read_to_string(&self.out).map_err(|e| e.to_string())?;
        serde_json::from_str(out.lines().last().unwrap_or(""))
            .map_err(|e| format!("{}: counters: {e}: {out}", self.name))
    }
}

#[derive(Debug, Clone)]
struct Ev {
    n: i64,
    attempt: i32,
    worker: String,
    event: String,
    last_error: Option<String>,
    lease_expires_at: Option<SystemTime>,
    at: SystemTime,
}

impl Env {
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn courier_client::tokio_postgres::types::ToSql + Sync)],
    ) -> R<Vec<courier_client::tokio_postgres::Row>> {
        let c = self.db.get().await.map_err(|e| e.to_string())?;
        c.query(sql, params).await.map_err(|e| e.to_string())
    }

    /// Retries through connection loss (the server restart scenario).
    async fn query_retry(
        &self,
        sql: &str,
        params: &[&(dyn courier_client::tokio_postgres::types::ToSql + Sync)],
    ) -> R<Vec<courier_client::tokio_postgres::Row>> {
        let start = Instant::now();
        loop {
            match self.query(sql, params).await {
                Ok(r) => return Ok(r),
                Err(e) if start.elapsed() < Duration::from_secs(30) => {
                    eprintln!("  (retrying after: {e})");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn events(&self, queue: &str) -> R<Vec<Ev>> {
        Ok(self
            .query_retry(
                "SELECT n, attempt, worker, event, last_error, lease_expires_at, at FROM harness.events \
                 WHERE queue = $1 ORDER BY at",
                &[&queue],
            )
            .await?
            .iter()
            .map(|r| Ev {
                n: r.get(0),
                attempt: r.get(1),
                worker: r.get(2),
                event: r.get(3),
                last_error: r.get(4),
                lease_expires_at: r.get(5),
                at: r.get(6),
            })
            .collect())
    }

    async fn now(&self) -> R<SystemTime> {
        Ok(self.query_retry("SELECT clock_timestamp()", &[]).await?[0].get(0))
    }

    async fn queue(&self, name: &str, settings: QueueSettings) -> R {
        let c = self.db.get().await.map_err(|e| e.to_string())?;
        courier_client::create_queue(&c, name, &settings).await.map_err(|e| e.to_string())
    }

    async fn enqueue(&self, queue: &str, tasks: &[Value]) -> R<Vec<i64>> {
        let c = self.db.get().await.map_err(|e| e.to_string())?;
        let r = courier_client::enqueue_batch(&c, queue, tasks, &BatchOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.iter().map(|e| e.id).collect())
    }

    /// Gauges of a queue: ready, delayed, in flight, dead.
    async fn gauges(&self, queue: &str) -> R<[i64; 4]> {
        let c = self.db.get().await.map_err(|e| e.to_string())?;
        let s = courier_client::stats(&c, queue).await.map_err(|e| e.to_string())?;
        Ok([s.ready, s.delayed, s.in_flight, s.dead])
    }

    async fn wait_until<F, Fut>(&self, what: &str, within: Duration, mut cond: F) -> R
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = R<bool>>,
    {
        let start = Instant::now();
        loop {
            if cond().await? {
                return Ok(());
            }
            if start.elapsed() > within {
                return Err(format!("timed out after {within:?} waiting for {what}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn by_n(evs: &[Ev]) -> BTreeMap<i64, Vec<Ev>> {
    let mut m: BTreeMap<i64, Vec<Ev>> = BTreeMap::new();
    for e in evs {
        m.entry(e.n).or_default().push(e.clone());
    }
    m
}

fn count(evs: &[Ev], event: &str, worker: Option<&str>) -> usize {
    evs.iter().filter(|e| e.event == event && worker.is_none_or(|w| e.worker == w)).count()
}

fn secs(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Exactly one `done` per message 1..=n.
fn once_each(evs: &[Ev], n: i64) -> R {
    let m = by_n(evs);
    for i in 1..=n {
        let done = m.get(&i).map_or(0, |v| v.iter().filter(|e| e.event == "done").count());
        ensure(done == 1, || format!("message n={i} was processed {done} times, not once"))?;
    }
    ensure(count(evs, "done", None) == n as usize, || "done rows for unknown messages".into())
}

async fn empty(env: &Env, queue: &str) -> R {
    let g = env.gauges(queue).await?;
    ensure(g == [0, 0, 0, 0], || format!("{queue}: ready/delayed/in_flight/dead = {g:?}, not all 0"))
}

fn counter(m: &Value, name: &str) -> u64 {
    m[name].as_u64().unwrap_or(u64::MAX)
}

// ------------------------------------------------------------------------------------------

/// kill -9 of a worker mid-handler: its two messages come back after the visibility timeout
/// (attempt 2) and are processed by the next worker; nothing else is redelivered.
async fn kill9(env: &Env) -> R<String> {
    let q = "t.kill9";
    env.queue(q, QueueSettings::default()).await?;
    // Long enough that the first two are still running when the kill comes, even on a busy machine.
    let tasks: Vec<Value> = (1..=8).map(|n| json!({"n": n, "sleep_ms": 3000})).collect();
    env.enqueue(q, &tasks).await?;
    let w1 =
        Proc::spawn(env, "kill9-w1", q, &["--concurrency", "2", "--vt-ms", "2000", "--timeout-ms", "5000"])
            .await?;
    env.wait_until("kill9-w1 to start 2 handlers", Duration::from_secs(15), || async {
        Ok(count(&env.events(q).await?, "start", Some("kill9-w1")) >= 2)
    })
    .await?;
    w1.signal(libc::SIGKILL);
    let _ = tokio::time::timeout(Duration::from_secs(5), { w1 }.child.wait()).await;
    let w2 =
        Proc::spawn(env, "kill9-w2", q, &["--concurrency", "4", "--vt-ms", "2000", "--timeout-ms", "5000"])
            .await?;
    env.wait_until("all 8 messages processed", Duration::from_secs(30), || async {
        Ok(count(&env.events(q).await?, "done", None) >= 8)
    })
    .await?;
    w2.signal(libc::SIGTERM);
    w2.exit(Duration::from_secs(10)).await?;

    let evs = env.events(q).await?;
    once_each(&evs, 8)?;
    ensure(count(&evs, "done", Some("kill9-w1")) == 0, || "the killed worker finished a handler".into())?;
    let killed: Vec<&Ev> = evs.iter().filter(|e| e.worker == "kill9-w1").collect();
    ensure(killed.len() == 2, || format!("kill9-w1 started {} handlers, expected 2", killed.len()))?;
    for (n, v) in by_n(&evs) {
        let done = v.iter().find(|e| e.event == "done").expect("checked above");
        ensure(done.worker == "kill9-w2", || format!("n={n} done by {}", done.worker))?;
        match killed.iter().find(|k| k.n == n) {
            Some(k) => {
                ensure(done.attempt == 2, || {
                    format!("n={n}: killed mid-handler, redelivered as attempt {}", done.attempt)
                })?;
                let again = v.iter().find(|e| e.worker == "kill9-w2" && e.event == "start").expect("a start");
                let expiry = k.lease_expires_at.expect("recorded");
                ensure(again.at >= expiry, || {
                    format!("n={n} redelivered {:.3} s before its lease expired", secs(expiry, again.at))
                })?;
            }
            None => ensure(done.attempt == 1, || format!("n={n} delivered {} times", done.attempt))?,
        }
    }
    empty(env, q).await?;
    Ok("2 messages killed mid-handler came back after their lease, 8/8 processed once".into())
}

/// SIGTERM during work, exactly-once mode: running handlers finish within the grace period,
/// the long ones are cancelled and rolled back, held ones are given back at once; the next
/// worker processes the rest; every message committed exactly once.
async fn sigterm(env: &Env) -> R<String> {
    let q = "t.term";
    env.queue(q, QueueSettings::default()).await?;
    let tasks: Vec<Value> = (1..=12)
        .map(|n| {
            if n <= 2 {
                json!({"n": n, "sleep_ms": 6000, "sleep_attempts": 1})
            } else {
                json!({"n": n, "sleep_ms": 300})
            }
        })
        .collect();
    env.enqueue(q, &tasks).await?;
    let common = ["--mode", "tx", "--concurrency", "3", "--vt-ms", "10000", "--timeout-ms", "8000"];
    let w1 = Proc::spawn(env, "term-w1", q, &[&common[..], &["--batch", "2", "--grace-ms", "2000"]].concat())
        .await?;
    env.wait_until("term-w1 to process 3 messages", Duration::from_secs(20), || async {
        Ok(count(&env.events(q).await?, "done", Some("term-w1")) >= 3)
    })
    .await?;
    let t_term = env.now().await?;
    let sent = Instant::now();
    w1.signal(libc::SIGTERM);
    let m1 = w1.exit(Duration::from_secs(8)).await?;
    let took = sent.elapsed();
    ensure(took < Duration::from_millis(4000), || format!("term-w1 took {took:?} to stop (grace 2 s)"))?;
    let w2 = Proc::spawn(env, "term-w2", q, &common).await?;
    env.wait_until("all 12 messages processed", Duration::from_secs(30), || async {
        Ok(count(&env.events(q).await?, "done", None) >= 12)
    })
    .await?;
    w2.signal(libc::SIGTERM);
    w2.exit(Duration::from_secs(10)).await?;

    let evs = env.events(q).await?;
    once_each(&evs, 12)?;
    let m = by_n(&evs);
    for n in [1, 2] {
        let v = &m[&n];
        ensure(v.iter().all(|e| !(e.worker == "term-w1" && e.event == "done")), || {
            format!("n={n} committed by term-w1")
        })?;
    }
    ensure(counter(&m1, "released") >= 2, || {
        format!("term-w1 released {} messages: {m1}", counter(&m1, "released"))
    })?;
    let mut given_back = 0;
    for (n, v) in &m {
        let w1_start = v.iter().find(|e| e.worker == "term-w1" && e.event == "start");
        let w1_done = v.iter().any(|e| e.worker == "term-w1" && e.event == "done");
        let w2_start = v.iter().find(|e| e.worker == "term-w2" && e.event == "start");
        if let Some(s2) = w2_start
            && s2.attempt > 1
        {
            // Leased by term-w1 (started or not) and given back at shutdown.
            given_back += 1;
            ensure(s2.last_error.as_deref() == Some("released at worker shutdown"), || {
                format!("n={n}: attempt {} saw last_error {:?}", s2.attempt, s2.last_error)
            })?;
            ensure(secs(s2.at, t_term) < 9.0, || {
                format!("n={n} came back {:.1} s after SIGTERM: not given back", secs(s2.at, t_term))
            })?;
        }
        if let (Some(s1), false) = (w1_start, w1_done) {
            let s2 = w2_start.ok_or_else(|| format!("n={n}: cancelled in term-w1 and never redelivered"))?;
            ensure(s2.attempt == s1.attempt + 1, || {
                format!("n={n}: attempt {} after {}", s2.attempt, s1.attempt)
            })?;
            ensure(s2.at < s1.lease_expires_at.expect("recorded"), || {
                format!("n={n}: redelivered only after its lease expired")
            })?;
        }
    }
    let finished_in_grace =
        evs.iter().filter(|e| e.worker == "term-w1" && e.event == "done" && e.at > t_term).count();
    ensure(finished_in_grace >= 1, || "no running handler finished during the grace period".into())?;
    ensure(
        evs.iter().all(|e| !(e.worker == "term-w1" && e.event == "done") || secs(e.at, t_term) < 2.5),
        || "term-w1 committed after its grace period".into(),
    )?;
    empty(env, q).await?;
    Ok(format!(
        "stopped in {:.1} s; {finished_in_grace} handlers finished in the grace period, {given_back} messages given back and redelivered at once; 12/12 committed once",
        took.as_secs_f64()
    ))
}

/// A second SIGTERM stops at once: nothing is given back, the leases expire as after a crash.
async fn sigterm_twice(env: &Env) -> R<String> {
    let q = "t.term2";
    env.queue(q, QueueSettings::default()).await?;
    let tasks: Vec<Value> = (1..=2).map(|n| json!({"n": n, "sleep_ms": 8000, "sleep_attempts": 1})).collect();
    env.enqueue(q, &tasks).await?;
    let common = [
        "--mode",
        "tx",
        "--concurrency",
        "2",
        "--vt-ms",
        "3000",
        "--timeout-ms",
        "15000",
        "--grace-ms",
        "20000",
    ];
    let w1 = Proc::spawn(env, "term2-w1", q, &common).await?;
    env.wait_until("term2-w1 to start both", Duration::from_secs(15), || async {
        Ok(count(&env.events(q).await?, "start", Some("term2-w1")) >= 2)
    })
    .await?;
    let sent = Instant::now();
    w1.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    w1.signal(libc::SIGTERM);
    let m1 = w1.exit(Duration::from_secs(10)).await?;
    let took = sent.elapsed();
    ensure(took < Duration::from_secs(3), || {
        format!("took {took:?} to stop after the second signal (grace 20 s)")
    })?;
    ensure(counter(&m1, "released") == 0, || format!("an immediate stop gave messages back: {m1}"))?;
    let w2 = Proc::spawn(env, "term2-w2", q, &common).await?;
    env.wait_until("both messages processed", Duration::from_secs(30), || async {
        Ok(count(&env.events(q).await?, "done", None) >= 2)
    })
    .await?;
    w2.signal(libc::SIGTERM);
    w2.exit(Duration::from_secs(10)).await?;
    let evs = env.events(q).await?;
    once_each(&evs, 2)?;
    for (n, v) in by_n(&evs) {
        let s1 = v.iter().find(|e| e.worker == "term2-w1").ok_or("no start in term2-w1")?;
        let s2 =
            v.iter().find(|e| e.worker == "term2-w2" && e.event == "start").ok_or("no start in term2-w2")?;
        ensure(s2.attempt == 2 && s2.last_error.is_none(), || {
            format!("n={n}: attempt {} last_error {:?}", s2.attempt, s2.last_error)
        })?;
        ensure(s2.at >= s1.lease_expires_at.expect("recorded"), || {
            format!("n={n} redelivered before its lease expired")
        })?;
        ensure(v.iter().all(|e| !(e.worker == "term2-w1" && e.event == "done")), || {
            format!("n={n} committed by term2-w1")
        })?;
    }
    empty(env, q).await?;
    Ok(format!(
        "stopped {:.1} s after the first signal; both leases expired and were redelivered",
        took.as_secs_f64()
    ))
}

/// A handler that overruns its timeout (sleeping inside its transaction) is cancelled, its
/// statement cancelled and rolled back, and the message nacked as a timeout; the attempt
/// counts, and one that always overruns is dead-lettered after max_attempts.
async fn overrun(env: &Env) -> R<String> {
    let q = "t.over";
    env.queue(
        q,
        QueueSettings::default()
            .max_attempts(2)
            .retry_base(Duration::from_millis(100))
            .retry_max(Duration::from_millis(200)),
    )
    .await?;
    let ids = env
        .enqueue(
            q,
            &[
                json!({"n": 1, "sleep_ms": 3000, "db_sleep": true, "sleep_attempts": 1}),
                json!({"n": 2, "sleep_ms": 3000, "db_sleep": true}),
            ],
        )
        .await?;
    let w = Proc::spawn(
        env,
        "over-w",
        q,
        &["--mode", "tx", "--concurrency", "2", "--vt-ms", "5000", "--timeout-ms", "1000"],
    )
    .await?;
    env.wait_until("n=1 processed and n=2 dead", Duration::from_secs(20), || async {
        Ok(count(&env.events(q).await?, "done", None) >= 1 && env.gauges(q).await?[3] >= 1)
    })
    .await?;
    w.signal(libc::SIGTERM);
    let m = w.exit(Duration::from_secs(10)).await?;
    ensure(counter(&m, "timed_out") == 3, || {
        format!("timed_out = {}, expected 3: {m}", counter(&m, "timed_out"))
    })?;
    let evs = env.events(q).await?;
    let by = by_n(&evs);
    let one: Vec<&Ev> = by[&1].iter().filter(|e| e.event == "start").collect();
    ensure(one.len() == 2 && one[0].attempt == 1 && one[1].attempt == 2, || format!("n=1 starts {one:?}"))?;
    ensure(one[1].last_error.as_deref() == Some("timeout after 1s"), || {
        format!("n=1 last_error {:?}", one[1].last_error)
    })?;
    let gap = secs(one[1].at, one[0].at);
    ensure(gap < 2.5, || {
        format!("n=1 ran {gap:.2} s before it was redelivered: the overrun was not cut at 1 s")
    })?;
    ensure(by[&1].iter().filter(|e| e.event == "done").all(|e| e.attempt == 2), || {
        "n=1 done on attempt 1".into()
    })?;
    ensure(count(&by[&2], "done", None) == 0, || "n=2 processed".into())?;
    ensure(count(&by[&2], "start", None) == 2, || "n=2 not delivered twice".into())?;
    let c = env.db.get().await.map_err(|e| e.to_string())?;
    let dead = courier_client::dead_letters(&c, Some(q)).await.map_err(|e| e.to_string())?;
    ensure(
        dead.len() == 1
            && dead[0].id == ids[1]
            && dead[0].attempts == 2
            && dead[0].last_error.as_deref() == Some("timeout after 1s"),
        || format!("dead letters {dead:?}"),
    )?;
    let g = env.gauges(q).await?;
    ensure(g[..3] == [0, 0, 0], || format!("gauges {g:?}"))?;
    Ok(format!(
        "overrun cut after {gap:.2} s and nacked 'timeout after 1s'; the always-overrunning message dead after 2 attempts"
    ))
}

/// A 10-second handler on a 3-second visibility timeout: the heartbeat keeps the lease, a second
/// worker waiting on the queue never gets the message, processed once. The waiting worker stops
/// at once on SIGTERM (its 20 s wait is cancelled).
async fn heartbeat(env: &Env) -> R<String> {
    let q = "t.hb";
    env.queue(q, QueueSettings::default()).await?;
    env.enqueue(q, &[json!({"n": 1, "sleep_ms": 10000})]).await?;
    let common = ["--concurrency", "1", "--vt-ms", "3000", "--timeout-ms", "15000"];
    let w1 = Proc::spawn(env, "hb-w1", q, &common).await?;
    env.wait_until("hb-w1 to start", Duration::from_secs(15), || async {
        Ok(count(&env.events(q).await?, "start", None) >= 1)
    })
    .await?;
    let w2 = Proc::spawn(env, "hb-w2", q, &[&common[..], &["--wait-ms", "20000"]].concat()).await?;
    env.wait_until("the message processed", Duration::from_secs(25), || async {
        Ok(count(&env.events(q).await?, "done", None) >= 1)
    })
    .await?;
    let evs = env.events(q).await?;
    ensure(evs.len() == 2 && evs.iter().all(|e| e.worker == "hb-w1" && e.attempt == 1), || {
        format!("events {evs:?}")
    })?;
    once_each(&evs, 1)?;
    let sent = Instant::now();
    w2.signal(libc::SIGTERM);
    let m2 = w2.exit(Duration::from_secs(10)).await?;
    let took = sent.elapsed();
    ensure(took < Duration::from_secs(2), || {
        format!("hb-w2 took {took:?} to stop: its 20 s wait was not cancelled")
    })?;
    w1.signal(libc::SIGTERM);
    let m1 = w1.exit(Duration::from_secs(10)).await?;
    let start = &evs[0];
    let done = &evs[1];
    let past = secs(done.at, start.lease_expires_at.expect("recorded"));
    ensure(past > 5.0, || format!("done only {past:.1} s after the first lease's expiry"))?;
    ensure(counter(&m1, "processed") == 1 && counter(&m1, "lease_lost") == 0, || format!("hb-w1 {m1}"))?;
    ensure(counter(&m2, "leased") == 0, || format!("hb-w2 {m2}"))?;
    empty(env, q).await?;
    Ok(format!(
        "held {past:.1} s past the first lease's expiry by the heartbeat; the waiting worker stopped in {:.2} s",
        took.as_secs_f64()
    ))
}

/// A worker frozen with SIGSTOP loses its lease to another; when it resumes, its late work is
/// rolled back (exactly-once mode), and it carries on.
async fn sigstop(env: &Env) -> R<String> {
    let q = "t.stop";
    env.queue(q, QueueSettings::default()).await?;
    env.enqueue(q, &[json!({"n": 1, "sleep_ms": 3000, "sleep_attempts": 1})]).await?;
    let common = ["--mode", "tx", "--concurrency", "1", "--vt-ms", "2000", "--timeout-ms", "10000"];
    let w1 = Proc::spawn(env, "stop-w1", q, &common).await?;
    env.wait_until("stop-w1 to start", Duration::from_secs(15), || async {
        Ok(count(&env.events(q).await?, "start", None) >= 1)
    })
    .await?;
    w1.signal(libc::SIGSTOP);
    let w2 = Proc::spawn(env, "stop-w2", q, &common).await?;
    env.wait_until("stop-w2 to process it", Duration::from_secs(20), || async {
        Ok(count(&env.events(q).await?, "done", None) >= 1)
    })
    .await?;
    w2.signal(libc::SIGTERM);
    w2.exit(Duration::from_secs(10)).await?;
    w1.signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.enqueue(q, &[json!({"n": 2})]).await?;
    env.wait_until("stop-w1 to carry on", Duration::from_secs(20), || async {
        Ok(count(&env.events(q).await?, "done", None) >= 2)
    })
    .await?;
    w1.signal(libc::SIGTERM);
    let m1 = w1.exit(Duration::from_secs(10)).await?;
    let evs = env.events(q).await?;
    once_each(&evs, 2)?;
    let by = by_n(&evs);
    let d1 = by[&1].iter().find(|e| e.event == "done").expect("checked");
    ensure(d1.worker == "stop-w2" && d1.attempt == 2, || format!("n=1 done {d1:?}"))?;
    ensure(by[&1].iter().any(|e| e.worker == "stop-w1" && e.event == "start"), || {
        "stop-w1 never started n=1".into()
    })?;
    let d2 = by[&2].iter().find(|e| e.event == "done").expect("checked");
    ensure(d2.worker == "stop-w1", || format!("n=2 done by {}", d2.worker))?;
    ensure(counter(&m1, "lease_lost") == 1 && counter(&m1, "processed") == 1, || format!("stop-w1 {m1}"))?;
    empty(env, q).await?;
    Ok("frozen worker's late work rolled back (lease_lost 1), the other's committed once; it carried on"
        .into())
}

/// A lease lost while the handler runs, unnoticed by the heartbeat (another session let it run
/// out and leased the message): the strict ack is refused (QC001) and the handler's writes roll
/// back; the message is processed once, later.
async fn stolen(env: &Env) -> R<String> {
    let q = "t.stolen";
    env.queue(q, QueueSettings::default()).await?;
    env.enqueue(q, &[json!({"n": 1, "steal": true})]).await?;
    let w =
        Proc::spawn(env, "stolen-w", q, &["--mode", "tx", "--concurrency", "1", "--vt-ms", "30000"]).await?;
    env.wait_until("the message processed", Duration::from_secs(20), || async {
        Ok(count(&env.events(q).await?, "done", None) >= 1)
    })
    .await?;
    w.signal(libc::SIGTERM);
    let m = w.exit(Duration::from_secs(10)).await?;
    let evs = env.events(q).await?;
    once_each(&evs, 1)?;
    let starts: Vec<&Ev> = evs.iter().filter(|e| e.event == "start").collect();
    ensure(starts.len() == 2 && starts[0].attempt == 1 && starts[1].attempt == 3, || {
        format!("starts {starts:?}")
    })?;
    ensure(starts[1].last_error.as_deref() == Some("stolen"), || format!("starts {starts:?}"))?;
    ensure(evs.iter().any(|e| e.event == "done" && e.attempt == 3), || "not processed on attempt 3".into())?;
    ensure(counter(&m, "lease_lost") == 1 && counter(&m, "processed") == 1, || format!("counters {m}"))?;
    empty(env, q).await?;
    Ok("the strict ack of a stolen lease was refused and its writes rolled back; processed once".into())
}

/// Message groups: three workers' loops lease up to three consecutive messages of a group at
/// a time; a failure inside a group (retried) must not let its later messages overtake it:
/// each group's messages start only after the one before it was done, in enqueue order.
async fn groups(env: &Env) -> R<String> {
    let q = "t.groups";
    env.queue(
        q,
        QueueSettings::default().retry_base(Duration::from_millis(100)).retry_max(Duration::from_millis(200)),
    )
    .await?;
    let mut tasks = Vec::new();
    let mut keys = Vec::new();
    let mut group_of: HashMap<i64, (String, usize)> = HashMap::new();
    let mut n = 0;
    for seq in 1..=6 {
        for g in ["A", "B", "C"] {
            n += 1;
            // A's second message fails once, in the middle of the three the first lease takes from A:
            // the third must not run before its retry.
            let fail = if g == "A" && seq == 2 { json!("error") } else { Value::Null };
            tasks.push(json!({"n": n, "sleep_ms": 30, "fail": fail, "fail_attempts": 1}));
            keys.push(Some(g.to_string()));
            group_of.insert(n, (g.to_string(), seq));
        }
        n += 1;
        tasks.push(json!({"n": n}));
        keys.push(None);
    }
    let c = env.db.get().await.map_err(|e| e.to_string())?;
    courier_client::enqueue_batch(
        &c,
        q,
        &tasks,
        &BatchOptions { group_keys: Some(keys), ..Default::default() },
    )
    .await
    .map_err(|e| e.to_string())?;
    drop(c);
    let w = Proc::spawn(env, "groups-w", q, &["--concurrency", "3", "--batch", "5", "--group-batch", "3"])
        .await?;
    env.wait_until("all 24 messages processed", Duration::from_secs(30), || async {
        Ok(count(&env.events(q).await?, "done", None) >= 24)
    })
    .await?;
    w.signal(libc::SIGTERM);
    let m = w.exit(Duration::from_secs(10)).await?;
    let evs = env.events(q).await?;
    once_each(&evs, 24)?;
    ensure(counter(&m, "failed") == 1, || format!("counters {m}"))?;
    for g in ["A", "B", "C"] {
        let mut order: Vec<(&Ev, usize)> = evs
            .iter()
            .filter_map(|e| group_of.get(&e.n).filter(|(k, _)| k == g).map(|(_, seq)| (e, *seq)))
            .collect();
        order.sort_by_key(|(e, _)| e.at);
        // Every event of seq k comes before every event of seq k+1, except that a failed
        // attempt's start is followed by its own retry.
        let seqs: Vec<usize> = order.iter().map(|(_, seq)| *seq).collect();
        ensure(seqs.windows(2).all(|w| w[0] <= w[1]), || format!("group {g} ran out of order: {seqs:?}"))?;
        let done: Vec<usize> = order.iter().filter(|(e, _)| e.event == "done").map(|(_, s)| *s).collect();
        ensure(done == (1..=6).collect::<Vec<_>>(), || format!("group {g} done in order {done:?}"))?;
    }
    let a2: Vec<&Ev> =
        evs.iter().filter(|e| group_of.get(&e.n) == Some(&("A".into(), 2)) && e.event == "start").collect();
    ensure(a2.len() == 2 && a2[1].last_error.as_deref() == Some(&format!("boom n={}", a2[0].n)), || {
        format!("A2 {a2:?}")
    })?;
    empty(env, q).await?;
    Ok("3 groups of 6 in order, A's 3rd-6th waited for A2's retry; 24/24 processed once".into())
}

/// Failures: an error retried until max_attempts then dead-lettered, poison dead-lettered at
/// once, a panic retried (the worker survives), retry_in honoured, an undecodable payload
/// dead-lettered as poison.
async fn poison(env: &Env) -> R<String> {
    let q = "t.poison";
    let dlq = "t.poison.dead";
    env.queue(dlq, QueueSettings::default()).await?;
    env.queue(
        q,
        QueueSettings::default()
            .max_attempts(3)
            .retry_base(Duration::from_millis(100))
            .retry_max(Duration::from_millis(200))
            .dead_letter_queue(dlq),
    )
    .await?;
    let ids = env
        .enqueue(
            q,
            &[
                json!({"n": 1, "fail": "error"}),
                json!({"n": 2, "fail": "poison"}),
                json!({"n": 3, "fail": "panic", "fail_attempts": 1}),
                json!({"n": 4, "fail": "retry:700", "fail_attempts": 1}),
                json!("not an object"),
                json!({"n": 6}),
            ],
        )
        .await?;
    let w = Proc::spawn(env, "poison-w", q, &["--concurrency", "2", "--vt-ms", "5000"]).await?;
    env.wait_until("3 dead letters and 3 messages processed", Duration::from_secs(20), || async {
        Ok(env.gauges(dlq).await?[0] >= 3 && count(&env.events(q).await?, "done", None) >= 3)
    })
    .await?;
    w.signal(libc::SIGTERM);
    let m = w.exit(Duration::from_secs(10)).await?;
    ensure(counter(&m, "failed") == 7 && counter(&m, "processed") == 3, || format!("counters {m}"))?;
    let evs = env.events(q).await?;
    let by = by_n(&evs);
    let starts = |n: i64| -> Vec<&Ev> {
        by.get(&n).map_or(vec![], |v| v.iter().filter(|e| e.event == "start").collect())
    };
    let done = |n: i64| -> Vec<&Ev> {
        by.get(&n).map_or(vec![], |v| v.iter().filter(|e| e.event == "done").collect())
    };
    let s1 = starts(1);
    ensure(s1.len() == 3 && done(1).is_empty(), || format!("n=1: {s1:?}"))?;
    ensure(s1[1..].iter().all(|e| e.last_error.as_deref() == Some("boom n=1")), || {
        format!("n=1 errors {s1:?}")
    })?;
    ensure(starts(2).len() == 1 && done(2).is_empty(), || "n=2 delivered more than once".into())?;
    let s3 = starts(3);
    ensure(
        s3.len() == 2
            && s3[1].last_error.as_deref().is_some_and(|e| e.starts_with("handler panicked: panic n=3")),
        || format!("n=3: {s3:?}"),
    )?;
    ensure(done(3).len() == 1 && done(3)[0].attempt == 2, || "n=3 not processed on attempt 2".into())?;
    let s4 = starts(4);
    ensure(s4.len() == 2 && s4[1].last_error.as_deref() == Some("later n=4"), || format!("n=4: {s4:?}"))?;
    let gap = secs(s4[1].at, s4[0].at);
    ensure(gap >= 0.7, || format!("n=4 retried after {gap:.2} s, not 0.7"))?;
    ensure(done(4).len() == 1 && done(6).len() == 1 && done(6)[0].attempt == 1, || {
        "n=4 or n=6 not processed".into()
    })?;
    ensure(by.keys().all(|n| *n != 5), || "the undecodable payload reached the handler".into())?;
    let c = env.db.get().await.map_err(|e| e.to_string())?;
    let dead = courier_client::dead_letters(&c, Some(dlq)).await.map_err(|e| e.to_string())?;
    let find = |id: i64| dead.iter().find(|d| d.id == id && d.origin_queue.as_deref() == Some(q));
    let d1 = find(ids[0]).ok_or("n=1 not dead-lettered")?;
    ensure(d1.attempts == 3 && d1.last_error.as_deref() == Some("boom n=1"), || format!("n=1 dead {d1:?}"))?;
    let d2 = find(ids[1]).ok_or("n=2 not dead-lettered")?;
    ensure(d2.attempts == 1 && d2.last_error.as_deref() == Some("poison n=2"), || {
        format!("n=2 dead {d2:?}")
    })?;
    let d5 = find(ids[4]).ok_or("the undecodable payload not dead-lettered")?;
    ensure(
        d5.attempts == 1
            && d5.last_error.as_deref().is_some_and(|e| e.starts_with("payload does not deserialize")),
        || format!("undecodable dead {d5:?}"),
    )?;
    ensure(dead.len() == 3, || format!("{} dead letters, expected 3", dead.len()))?;
    empty(env, q).await?;
    Ok(format!(
        "error dead after 3 attempts, poison and undecodable dead at once, panic retried, retry_in honoured ({gap:.2} s)"
    ))
}

/// pg_terminate_backend of the worker's connections, twice, then a server restart, while
/// messages keep coming: the worker reconnects and carries on, and in exactly-once mode every
/// message is committed once.
async fn reconnect(env: &Env, restart_cmd: &str) -> R<String> {
    let q = "t.conn";
    env.queue(q, QueueSettings::default()).await?;
    let w = Proc::spawn(
        env,
        "conn-w",
        q,
        &["--mode", "tx", "--concurrency", "4", "--batch", "4", "--vt-ms", "5000", "--wait-ms", "1000"],
    )
    .await?;
    let mut w = w;
    let total = 300;
    let mut terminated = 0;
    for b in 0..30i64 {
        let tasks: Vec<Value> = (1..=10).map(|i| json!({"n": b * 10 + i, "sleep_ms": 20})).collect();
        let keys: Vec<Option<String>> = (1..=10).map(|i| Some(format!("n{}", b * 10 + i))).collect();
        // A retried batch whose first commit went through is recognised by its dedup keys.
        let start = Instant::now();
        loop {
            let r = async {
                let c = env.db.get().await.map_err(|e| e.to_string())?;
                courier_client::enqueue_batch(
                    &c,
                    q,
                    &tasks,
                    &BatchOptions { dedup_keys: Some(keys.clone()), ..Default::default() },
                )
                .await
                .map_err(|e| e.to_string())
            };
            match r.await {
                Ok(_) => break,
                Err(e) if start.elapsed() < Duration::from_secs(30) => {
                    eprintln!("  (enqueue retried after: {e})");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
        if b == 8 || b == 15 {
            let rows = env
                .query_retry(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'courier-harness-w-conn-w'",
                    &[],
                )
                .await?;
            terminated += rows.len();
        }
        if b == 22 {
            let status =
                Command::new("bash").args(["-c", restart_cmd]).status().await.map_err(|e| e.to_string())?;
            ensure(status.success(), || format!("restart command failed: {status}"))?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.wait_until("all 300 messages processed", Duration::from_secs(60), || async {
        Ok(count(&env.events(q).await?, "done", None) >= total)
    })
    .await?;
    ensure(w.running(), || "the worker exited".into())?;
    w.signal(libc::SIGTERM);
    let m = w.exit(Duration::from_secs(10)).await?;
    ensure(terminated >= 8, || format!("only {terminated} worker connections terminated"))?;
    ensure(counter(&m, "reconnects") >= 3, || format!("counters {m}"))?;
    let evs = env.events(q).await?;
    once_each(&evs, total as i64)?;
    empty(env, q).await?;
    Ok(format!(
        "{terminated} connections terminated and a restart: {} reconnects, 300/300 committed once",
        counter(&m, "reconnects")
    ))
}

/// The two examples: the web handler writes orders and enqueues their emails in one
/// transaction (a refused order leaves neither), the worker sends each email once.
async fn examples(env: &Env, examples_dir: &Path, http_port: u16) -> R<String> {
    let log = |n: &str| std::fs::File::create(env.dir.join(n)).map_err(|e| e.to_string());
    let mut shop = Command::new(examples_dir.join("shop"))
        .env("DATABASE_URL", &env.conninfo)
        .env("LISTEN", format!("127.0.0.1:{http_port}"))
        .stdout(log("shop.out")?)
        .stderr(log("shop.err")?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("shop: {e}"))?;
    let post = |body: String| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s =
            tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await.map_err(|e| e.to_string())?;
        let req = format!(
            "POST /orders HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(resp)
    };
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await.is_err() {
        ensure(start.elapsed() < Duration::from_secs(20), || "the shop did not start listening".into())?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut accepted = 0;
    for i in 1..=5 {
        let r =
            post(json!({"email": format!("customer{i}@example.com"), "total_cents": 1000 * i}).to_string())
                .await?;
        ensure(r.starts_with("HTTP/1.1 201"), || format!("order {i}: {r}"))?;
        accepted += 1;
    }
    let r = post(json!({"email": "nobody", "total_cents": 100}).to_string()).await?;
    ensure(r.starts_with("HTTP/1.1 422"), || format!("the invalid order: {r}"))?;
    let rows = env.query("SELECT count(*) FROM shop.orders", &[]).await?;
    let orders: i64 = rows[0].get(0);
    ensure(orders == accepted, || format!("{orders} orders stored, {accepted} accepted"))?;
    let g = env.gauges("emails").await?;
    ensure(g[0] == accepted, || format!("{} emails queued for {accepted} orders", g[0]))?;

    let mut worker = Command::new(examples_dir.join("email_worker"))
        .env("DATABASE_URL", &env.conninfo)
        .stdout(log("email_worker.out")?)
        .stderr(log("email_worker.err")?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("email_worker: {e}"))?;
    env.wait_until("every order's email sent", Duration::from_secs(20), || async {
        let r = env.query("SELECT count(*) FROM shop.orders WHERE email_sent_at IS NULL", &[]).await?;
        Ok(r[0].get::<_, i64>(0) == 0)
    })
    .await?;
    for (name, child) in [("email_worker", &mut worker), ("shop", &mut shop)] {
        // SAFETY: kill(2) of a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id().ok_or("no pid")? as i32, libc::SIGTERM);
        }
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .map_err(|_| format!("{name} did not stop on SIGTERM"))?
            .map_err(|e| e.to_string())?;
        ensure(status.success(), || format!("{name} exited with {status}"))?;
    }
    let out = std::fs::read_to_string(env.dir.join("email_worker.out")).map_err(|e| e.to_string())?;
    let sent: Vec<&str> = out.lines().filter(|l| l.starts_with("sent order ")).collect();
    ensure(sent.len() == accepted as usize, || {
        format!("{} emails sent for {accepted} orders:\n{out}", sent.len())
    })?;
    let mut per: HashMap<&str, usize> = HashMap::new();
    for l in &sent {
        *per.entry(l.split_whitespace().nth(2).unwrap_or("")).or_default() += 1;
    }
    ensure(per.values().all(|c| *c == 1), || format!("an order's email sent twice:\n{out}"))?;
    empty(env, "emails").await?;
    Ok(format!(
        "{accepted} orders, 1 refused and rolled back with its email; {accepted} emails sent once each"
    ))
}

pub async fn main(args: Args) -> R {
    let conninfo = args.str("conninfo")?;
    let dir = PathBuf::from(args.str("dir")?);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let env = Env {
        db: pool(&conninfo, "courier-harness-check", 8)?,
        conninfo,
        bin: std::env::current_exe().map_err(|e| e.to_string())?,
        dir,
    };
    {
        let c = env.db.get().await.map_err(|e| e.to_string())?;
        c.batch_execute(EVENTS_DDL).await.map_err(|e| e.to_string())?;
    }
    let only: Option<Vec<String>> = args.opt("only").map(|s| s.split(',').map(str::to_string).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let examples_dir = PathBuf::from(args.str("examples-dir")?);
    let http_port: u16 = args.num("http-port", 55401)?;

    let started = Instant::now();
    let mut results: Vec<(&str, R<String>)> = Vec::new();
    macro_rules! run_if {
        ($name:literal, $f:expr) => {
            async {
                if wanted($name) {
                    let t = Instant::now();
                    let r = $f.await;
                    Some(($name, r.map(|s| format!("{s} [{:.1} s]", t.elapsed().as_secs_f64()))))
                } else {
                    None
                }
            }
        };
    }
    // These use a queue each and run side by side; the restart would disturb them, so it runs
    // after them.
    let parallel = tokio::join!(
        run_if!("kill9", kill9(&env)),
        run_if!("sigterm", sigterm(&env)),
        run_if!("sigterm-twice", sigterm_twice(&env)),
        run_if!("overrun", overrun(&env)),
        run_if!("heartbeat", heartbeat(&env)),
        run_if!("sigstop", sigstop(&env)),
        run_if!("poison", poison(&env)),
        run_if!("stolen", stolen(&env)),
        run_if!("groups", groups(&env)),
        run_if!("examples", examples(&env, &examples_dir, http_port)),
    );
    let (a, b, c, d, e, f, g, h, i, j) = parallel;
    results.extend([a, b, c, d, e, f, g, h, i, j].into_iter().flatten());
    if wanted("reconnect") {
        let restart_cmd = args.str("restart-cmd")?;
        let t = Instant::now();
        let r = reconnect(&env, &restart_cmd).await;
        results.push(("reconnect", r.map(|s| format!("{s} [{:.1} s]", t.elapsed().as_secs_f64()))));
    }
    let mut failed = 0;
    for (name, r) in &results {
        match r {
            Ok(s) => println!("ok   {name}: {s}"),
            Err(e) => {
                failed += 1;
                println!("FAIL {name}: {e}");
            }
        }
    }
    println!("{} scenarios, {failed} failed, {:.1} s", results.len(), started.elapsed().as_secs_f64());
    ensure(!results.is_empty(), || "no scenario ran".into())?;
    ensure(failed == 0, || format!("{failed} scenarios failed; worker logs in {}", env.dir.display()))
}
