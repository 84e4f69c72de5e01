//! The update under load (`run --upgrade-from VERSION [--upgrade-at SECS]`): the run's database is
//! created at an old version, and at `--upgrade-at` seconds after the workers start (half the
//! duration by default) the controller runs `ALTER EXTENSION courier UPDATE` from a connection of
//! its own while the producers and consumers keep working. Each attempt goes into the history
//! (`upgrade.jsonl`) with its times, the ALTER's duration, its outcome and the extversion read
//! after it; the run's final extversion goes to `version.jsonl`; the checker's
//! `upgrade_attempts` judges both.
//!
//! Faults and the update. The fault loop runs the update between two of its faults, so no fault
//! of the schedule lands on it: which of a fault and a statement of a few milliseconds wins would
//! depend on timing, and the run could not be replayed from its seed. Every attempt runs the ALTER
//! in a transaction that it holds open for 100–1000 ms before COMMIT, so the workers keep working
//! against the uncommitted update (and would queue behind any lock it takes) and the commit lands
//! in the middle of their transactions. The seed decides, up front, whether the first attempt is
//! interrupted: for half the seeds (when a crash or `terminate` is enabled) the controller
//! injects, during that hold, a crash (`kill9`, `kill9-all`, `immediate`) or a
//! `pg_terminate_backend` of the update's own backend — drawn with the schedule's weights among
//! the enabled ones — and only then sends COMMIT, which finds the backend gone. Once the server
//! is back and the workers have reconnected, the controller reads `pg_extension.extversion` and
//! runs the update again (at most `MAX_ATTEMPTS` in all). These choices come from a generator of
//! their own, so the workers' seeds and the fault schedule are those of the same seed without an
//! update. `--upgrade-interrupt FAULT|none` overrides the seed's choice (bin/test pins one).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::faults::{self, FAULTS, Fault, Injector, Sessions, Worker, unix_micros};
use crate::history::{Event, Outcome, Upgrade, Writer};
use crate::rng::Rng;
use crate::{DB, connect_retry, die, worker};

/// Attempts before the controller gives up (the checker then finds the old version at the end).
const MAX_ATTEMPTS: u32 = 3;
/// The longest the controller waits for one statement of the update: past the server's own 20 s
/// `statement_timeout` (an error that fails the run, saying what the statement waited for).
const STATEMENT_WAIT: Duration = Duration::from_secs(30);
/// Mixed into the seed for the update's own generator.
const STREAM: u64 = 0x7570_6772_6164_6521;

/// `--upgrade-from`, `--upgrade-at` and `--upgrade-interrupt`.
#[derive(Clone)]
pub struct Plan {
    pub from: String,
    /// After the workers start.
    pub at: Duration,
    /// The first attempt's interruption, if not the seed's: `Some(None)` for none.
    pub interrupt: Option<Option<Fault>>,
}

impl Plan {
    pub fn parse(
        from: Option<&str>,
        at: Option<f64>,
        interrupt: Option<&str>,
        duration: Duration,
    ) -> Option<Plan> {
        let Some(from) = from else {
            if at.is_some() || interrupt.is_some() {
                die("--upgrade-at and --upgrade-interrupt need --upgrade-from");
            }
            return None;
        };
        // It is spliced into CREATE EXTENSION ... VERSION '...'.
        if from.is_empty() || !from.chars().all(|c| c.is_ascii_digit() || c == '.') {
            die(&format!("--upgrade-from: {from:?} is not a version"));
        }
        let at = match at {
            None => duration / 2,
            Some(secs) if secs >= 0.0 && secs < duration.as_secs_f64() => Duration::from_secs_f64(secs),
            Some(_) => die("--upgrade-at must be between 0 and --duration"),
        };
        let interrupt = match interrupt {
            None | Some("seed") => None,
            Some("none") => Some(None),
            Some(name) => match faults::parse(Some(name))[..] {
                [f] if f != Fault::Sigstop => Some(Some(f)),
                _ => die("--upgrade-interrupt: seed, none, kill9, kill9-all, immediate or terminate"),
            },
        };
        Some(Plan { from: from.to_string(), at, interrupt })
    }
}

pub struct Upgrader {
    plan: Plan,
    /// The default version: what the update aims at.
    to: String,
    conninfo: String,
    rng: Rng,
    /// The fault that interrupts the first attempt: the seed's choice, or `--upgrade-interrupt`'s.
    interruption: Option<Fault>,
    log: Writer,
    done: bool,
}

impl Upgrader {
    /// `to` is the server's default version; `enabled` the run's faults.
    pub fn new(
        plan: Plan,
        to: String,
        seed: u64,
        enabled: &[Fault],
        cluster: &Cluster,
        hist: &Path,
    ) -> Upgrader {
        let mut rng = Rng::new(seed ^ STREAM);
        // Faults that can interrupt a transaction: a frozen consumer cannot.
        let weights: Vec<u32> = FAULTS
            .iter()
            .map(|(f, _, w)| if enabled.contains(f) && *f != Fault::Sigstop { *w } else { 0 })
            .collect();
        let seeded =
            (weights.iter().any(|w| *w > 0) && rng.chance(0.5)).then(|| FAULTS[rng.weighted(&weights)].0);
        // Drawn even when overridden, so that the rest of the update's choices stay the seed's.
        let interruption = plan.interrupt.unwrap_or(seeded);
        Upgrader {
            plan,
            to,
            conninfo: cluster.conninfo(DB, "postgres", "courier-fault-upgrade"),
            rng,
            interruption,
            log: Writer::create(&hist.join("upgrade.jsonl")).expect("upgrade history"),
            done: false,
        }
    }

    /// What the banner says about the update.
    pub fn describe(&self) -> String {
        let first = match self.interruption {
            Some(f) => format!("first attempt interrupted by {}", faults::name(f)),
            None => "first attempt not interrupted".into(),
        };
        format!("update {} -> {} at {:.1} s, {first}", self.plan.from, self.to, self.plan.at.as_secs_f64())
    }

    /// When the update is due, for a loop whose workers started at `started`; None once it ran.
    pub fn due(&self, started: Instant) -> Option<Instant> {
        (!self.done).then(|| started + self.plan.at)
    }

    /// Runs the update until it is in (or `MAX_ATTEMPTS` ran), printing each attempt.
    pub async fn run(&mut self, injector: &mut Injector<'_>, workers: &[Worker], started: Instant) {
        for n in 1..=MAX_ATTEMPTS {
            let interruption = if n == 1 { self.interruption } else { None };
            let a = self.attempt(n, interruption, injector, workers, started).await;
            println!("  {}", describe(&a));
            self.log.log(&Event::Upgrade(a.clone()));
            if a.version == self.to {
                break;
            }
        }
        self.done = true;
    }

    /// One attempt: BEGIN, the ALTER, the transaction held open for 100–1000 ms (seeded) while
    /// the workers run against the uncommitted update, the interrupting fault if any, COMMIT;
    /// then the version, read once the server is back.
    async fn attempt(
        &mut self,
        n: u32,
        interruption: Option<Fault>,
        injector: &mut Injector<'_>,
        workers: &[Worker],
        started: Instant,
    ) -> Upgrade {
        let hold = Duration::from_millis(self.rng.range(100, 1000));
        // Under load: after a crash (the interruption of an earlier attempt, or the schedule's
        // last fault), the workers first have to be back.
        injector.wait_for_workers(workers).await;
        let c = connect_retry(&self.conninfo).await;
        let mut a = Upgrade {
            attempt: n,
            from: self.plan.from.clone(),
            to: self.to.clone(),
            at: unix_micros(),
            until: 0,
            offset_ms: started.elapsed().as_millis() as u64,
            statement_us: None,
            hold_ms: hold.as_millis() as u64,
            interrupted_by: None,
            outcome: Outcome::Fail,
            version: String::new(),
            error: None,
        };
        a.outcome = self.transaction(&c, &mut a, hold, interruption, injector, workers).await;
        a.until = unix_micros();
        a.version = extversion(&self.conninfo).await;
        a
    }

    /// The attempt's transaction, and its outcome.
    async fn transaction(
        &mut self,
        c: &tokio_postgres::Client,
        a: &mut Upgrade,
        hold: Duration,
        interruption: Option<Fault>,
        injector: &mut Injector<'_>,
        workers: &[Worker],
    ) -> Outcome {
        let pid: i32 = match statement(c, "SELECT pg_backend_pid()").await {
            Ok(rows) => rows.first().and_then(|r| r.get(0)).and_then(|v| v.parse().ok()).unwrap_or(0),
            Err(e) => return failed(a, "pg_backend_pid()", e),
        };
        if let Err(e) = statement(c, "BEGIN").await {
            return failed(a, "BEGIN", e);
        }
        let t = Instant::now();
        // No COMMIT follows a failed ALTER: the transaction rolls back, whatever the failure.
        if let Err(e) = statement(c, "ALTER EXTENSION courier UPDATE").await {
            return failed(a, "ALTER", e);
        }
        a.statement_us = Some(t.elapsed().as_micros() as i64);
        tokio::time::sleep(hold).await;
        if let Some(fault) = interruption {
            injector.inject(fault, &mut self.rng, workers, Sessions::Backend(pid)).await;
            a.interrupted_by = Some(faults::name(fault).into());
            if fault == Fault::Terminate {
                // pg_terminate_backend only signals: wait until the backend is gone, so that the
                // COMMIT below certainly finds nobody to commit.
                injector.wait_gone(pid).await;
            }
        }
        match statement(c, "COMMIT").await {
            Ok(_) => Outcome::Ok,
            // The backend that held the transaction was gone before COMMIT was sent.
            Err(Failed::Lost) if interruption.is_some() => Outcome::Fail,
            Err(Failed::Lost) => Outcome::Info,
            Err(Failed::Timeout) => {
                a.error = Some(format!("COMMIT: no answer in {} s", STATEMENT_WAIT.as_secs()));
                Outcome::Info
            }
            // A COMMIT that reports an error rolled back.
            Err(e) => failed(a, "COMMIT", e),
        }
    }
}

/// How a statement of the update failed.
enum Failed {
    /// The connection is gone.
    Lost,
    /// The server did not answer in `STATEMENT_WAIT`: an error the run reports, and the
    /// statement's outcome is unknown.
    Timeout,
    /// Anything else: an error the run must report.
    Error(String),
}

/// Runs one statement of the update with the simple query protocol; the rows as text.
async fn statement(
    c: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<tokio_postgres::SimpleQueryRow>, Failed> {
    match tokio::time::timeout(STATEMENT_WAIT, c.simple_query(sql)).await {
        Ok(Ok(messages)) => Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .collect()),
        Ok(Err(e)) if worker::lost_connection(&e) => Err(Failed::Lost),
        Ok(Err(e)) => Err(Failed::Error(describe_error(&e))),
        Err(_) => Err(Failed::Timeout),
    }
}

/// The outcome of a transaction whose `what` failed before COMMIT succeeded: rolled back. An
/// error other than a lost connection goes into the attempt's record.
fn failed(a: &mut Upgrade, what: &str, e: Failed) -> Outcome {
    match e {
        Failed::Lost => {}
        Failed::Timeout => a.error = Some(format!("{what}: no answer in {} s", STATEMENT_WAIT.as_secs())),
        Failed::Error(e) => a.error = Some(format!("{what}: {e}")),
    }
    Outcome::Fail
}

/// The SQLSTATE and message of a server error, or the client's words.
fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// pg_extension.extversion, once the server accepts connections.
async fn extversion(conninfo: &str) -> String {
    let c = connect_retry(conninfo).await;
    c.query_one("SELECT extversion FROM pg_extension WHERE extname = 'courier'", &[])
        .await
        .expect("read extversion")
        .get(0)
}

/// The server's default version of courier, refusing (after stopping the server) an update from
/// it or from a version the server does not offer.
pub async fn default_version(cluster: &Cluster, from: &str) -> String {
    let c = connect_retry(&cluster.conninfo("postgres", "postgres", "courier-fault-setup")).await;
    let to: String = c
        .query_one("SELECT default_version FROM pg_available_extensions WHERE name = 'courier'", &[])
        .await
        .expect("courier is installed")
        .get(0);
    let offered: Vec<String> = c
        .query("SELECT version FROM pg_available_extension_versions WHERE name = 'courier' ORDER BY 1", &[])
        .await
        .expect("courier's versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    if from == to || !offered.iter().any(|v| v == from) {
        cluster.stop("fast");
        die(&format!(
            "--upgrade-from {from}: the server offers {} with {to} the default",
            offered.join(", ")
        ));
    }
    to
}

/// Records the run's final extversion and the default version (the server must be running).
pub async fn record_final_version(cluster: &Cluster, hist: &Path) {
    let c = connect_retry(&cluster.conninfo(DB, "postgres", "courier-fault-check")).await;
    let row = c
        .query_one(
            "SELECT e.extversion, a.default_version FROM pg_extension e
             JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'courier'",
            &[],
        )
        .await
        .expect("read the final version");
    let mut log = Writer::create(&hist.join("version.jsonl")).expect("version history");
    log.log(&Event::Version { version: row.get(0), default: row.get(1) });
}

/// One attempt, as the run prints it and the report lists it.
pub fn describe(a: &Upgrade) -> String {
    let mut s = format!(
        "[{:5.1} s] update {} -> {}, attempt {}: ",
        a.offset_ms as f64 / 1000.0,
        a.from,
        a.to,
        a.attempt
    );
    if let Some(us) = a.statement_us {
        s += &format!("ALTER {:.1} ms", us as f64 / 1000.0);
    } else {
        s += "ALTER did not return";
    }
    s += &format!(", held {} ms", a.hold_ms);
    if let Some(f) = &a.interrupted_by {
        s += &format!(", {f} before COMMIT");
    }
    s += match a.outcome {
        Outcome::Ok => ", committed",
        Outcome::Fail => ", rolled back",
        Outcome::Info => ", outcome unknown",
    };
    s += &format!(" ({:.1} ms in all), extversion {}", (a.until - a.at) as f64 / 1000.0, a.version);
    if let Some(e) = &a.error {
        s += &format!("; error: {e}");
    }
    s
}
