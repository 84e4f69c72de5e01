//! The faults the controller injects, and the injection of one: a crash of the server (with the
//! recovery and the pg_amcheck after it), killed sessions, or a frozen consumer.

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::history::{self, Writer};
use crate::rng::Rng;
use crate::{DB, connect, die};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    Kill9,
    Kill9All,
    Immediate,
    Terminate,
    Sigstop,
}

/// Every fault with its name on the command line and its weight in the schedule.
pub const FAULTS: [(Fault, &str, u32); 5] = [
    (Fault::Kill9, "kill9", 2),
    (Fault::Kill9All, "kill9-all", 2),
    (Fault::Immediate, "immediate", 2),
    (Fault::Terminate, "terminate", 3),
    (Fault::Sigstop, "sigstop", 2),
];

pub fn name(f: Fault) -> &'static str {
    FAULTS.iter().find(|(k, _, _)| *k == f).map(|(_, n, _)| *n).unwrap_or("?")
}

/// The faults of a `--faults` list (all of them without one).
pub fn parse(list: Option<&str>) -> Vec<Fault> {
    match list {
        None => FAULTS.iter().map(|(f, _, _)| *f).collect(),
        Some(list) => list
            .split(',')
            .map(|n| {
                FAULTS
                    .iter()
                    .find(|(_, name, _)| *name == n)
                    .map(|(f, _, _)| *f)
                    .unwrap_or_else(|| die(&format!("unknown fault {n}")))
            })
            .collect(),
    }
}

/// The schedule's weights, by `FAULTS` index: 0 for a fault that is not enabled.
pub fn weights(enabled: &[Fault]) -> Vec<u32> {
    FAULTS.iter().map(|(f, _, w)| if enabled.contains(f) { *w } else { 0 }).collect()
}

/// A producer or consumer process.
pub struct Worker {
    pub child: Child,
    pub consumer: bool,
}

/// Whose sessions a `terminate` ends.
pub enum Sessions {
    /// 1–3 producer or consumer sessions, at random.
    Workers,
    /// The backend with this pid (the update's), and no other.
    Backend(i32),
}

pub fn unix_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_micros()
        as i64
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory preconditions; the pid is one of our own child processes.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Stops workers: writes the stop file, sends a SIGCONT to any a fault may have frozen, and waits
/// up to a minute for them to finish their operation and exit, killing those still running then.
pub async fn stop_workers(stop_file: &std::path::Path, workers: &mut [Worker]) {
    std::fs::write(stop_file, b"").expect("stop file");
    let deadline = Instant::now() + Duration::from_secs(60);
    for w in workers {
        signal(w.child.id(), libc::SIGCONT);
        loop {
            if let Ok(Some(_)) = w.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = w.child.kill();
                let _ = w.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Injects faults into one cluster and keeps their tally: how many of each kind, the pg_amcheck
/// runs after crashes and what they found, and the crash log the checker reads.
pub struct Injector<'a> {
    cluster: &'a Cluster,
    admin_info: String,
    durable_leases: bool,
    vt_ms: u64,
    crashes: Writer,
    pub injected: HashMap<Fault, usize>,
    pub findings: Vec<String>,
    pub amchecks: usize,
}

impl<'a> Injector<'a> {
    pub fn new(
        cluster: &'a Cluster,
        hist: &std::path::Path,
        durable_leases: bool,
        vt_ms: u64,
    ) -> Injector<'a> {
        Injector {
            cluster,
            admin_info: cluster.conninfo(DB, "postgres", "courier-fault-admin"),
            durable_leases,
            vt_ms,
            crashes: Writer::create(&hist.join("crashes.jsonl")).expect("crash log"),
            injected: HashMap::new(),
            findings: Vec::new(),
            amchecks: 0,
        }
    }

    /// Injects one fault and returns once it is over: a crashed server is running again (and
    /// pg_amcheck has checked it), a frozen consumer runs again. The fault's own choices (how
    /// many sessions, which consumer, for how long) come from `rng`.
    pub async fn inject(&mut self, fault: Fault, rng: &mut Rng, workers: &[Worker], sessions: Sessions) {
        match fault {
            Fault::Kill9 | Fault::Kill9All | Fault::Immediate => {
                let at = unix_micros();
                match fault {
                    Fault::Immediate => self.cluster.stop("immediate"),
                    _ => self.cluster.kill9(fault == Fault::Kill9All),
                }
                self.cluster.start();
                let durable_leases = self.durable_leases;
                self.crashes.log(&history::Event::Crash { at, until: unix_micros(), durable_leases });
                self.amchecks += 1;
                if let Err(e) = self.cluster.amcheck(DB) {
                    self.findings.push(format!("after {}: {e}", name(fault)));
                }
            }
            Fault::Terminate => {
                if let Some(admin) = connect(&self.admin_info).await {
                    let _ = match sessions {
                        Sessions::Workers => {
                            let n = rng.range(1, 3) as i64;
                            admin
                                .execute(
                                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                                     WHERE application_name LIKE 'courier-fault-%er-%' ORDER BY random() LIMIT $1",
                                    &[&n],
                                )
                                .await
                        }
                        Sessions::Backend(pid) => {
                            admin.execute("SELECT pg_terminate_backend($1)", &[&pid]).await
                        }
                    };
                }
            }
            Fault::Sigstop => {
                let consumers: Vec<&Worker> = workers.iter().filter(|w| w.consumer).collect();
                let w = consumers[rng.range(0, consumers.len() as u64 - 1) as usize];
                let pid = w.child.id();
                signal(pid, libc::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(rng.range(self.vt_ms * 3 / 2, self.vt_ms * 3)))
                    .await;
                signal(pid, libc::SIGCONT);
            }
        }
        *self.injected.entry(fault).or_default() += 1;
    }

    /// Returns once the backend `pid` has exited (or after 10 s).
    pub async fn wait_gone(&self, pid: i32) {
        let Some(admin) = connect(&self.admin_info).await else { return };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match admin.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid]).await {
                Ok(row) if row.get::<_, i64>(0) > 0 => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => return,
            }
        }
    }

    /// Returns once every worker has a session again (or after 10 s): after a crash they
    /// reconnect with a backoff of up to a second.
    pub async fn wait_for_workers(&self, workers: &[Worker]) {
        let Some(admin) = connect(&self.admin_info).await else { return };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let sessions = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'courier-fault-%er-%'",
                    &[],
                )
                .await;
            match sessions {
                Ok(row) if (row.get::<_, i64>(0) as usize) < workers.len() => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => return,
            }
        }
    }

    /// How many faults of every enabled kind, as the report prints them.
    pub fn tally(&self, enabled: &[Fault]) -> (usize, String) {
        let by_kind = FAULTS
            .iter()
            .filter(|(f, _, _)| enabled.contains(f))
            .map(|(f, n, _)| format!("{n} {}", self.injected.get(f).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ");
        (self.injected.values().sum(), by_kind)
    }
}

/// Sleeps until `at` (returns at once if it has passed).
pub async fn sleep_until(at: Instant) {
    tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
}
