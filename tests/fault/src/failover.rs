//! `courier-fault failover`: the harness's producers and consumers against a primary with a
//! standby, through repeated failovers, then a drain and the history check.
//!
//! Two clusters, `node_a` and `node_b`, each with its socket in its own directory: the first is
//! initialised as the `run` command's cluster is, the second cloned from it with
//! `pg_basebackup -R` (courier preloaded on both: the clone keeps the configuration). With
//! `--replication sync` (the default) the primary names the standby in
//! `synchronous_standby_names` and commits with `synchronous_commit = on`, so a commit is
//! acknowledged only once the standby has flushed it; `async` is the negative control.
//!
//! The workers are the `run` command's (worker.rs), unchanged: each has one connection string
//! that lists both nodes with `target_session_attrs=read-write`, so whenever a connection breaks
//! it reconnects to whichever node takes writes, as an application would.
//!
//! A failover, `--failovers` times, 2–5 s apart (seeded):
//! 1. The link fails first: the primary's walsender for the standby is stopped (SIGSTOP) for
//!    100–800 ms, as a network that stalls or a standby that falls behind. Commits go on on the
//!    primary meanwhile; with a synchronous standby they wait, unacknowledged, for it.
//! 2. `kill -9` of every process of the primary at once (the promotion does not wait for them to
//!    be reaped; the rewind does).
//! 3. The standby's inherited `synchronous_standby_names` is cleared (`ALTER SYSTEM` on the hot
//!    standby, then a reload: a promoted node that keeps it blocks its first commit) and it is
//!    promoted (`pg_ctl promote`); a CHECKPOINT on it makes its new timeline visible to
//!    pg_rewind; pg_amcheck checks it while the workers work on it.
//! 4. The old primary is rewound (`pg_rewind -R` from the new primary; pg_rewind first runs crash
//!    recovery on it in single-user mode), its own port, socket and `cluster_name` are written
//!    back over the configuration pg_rewind copied from the source, and it starts as a standby.
//! 5. Once it streams, the new primary names it as its synchronous standby (sync) and the
//!    controller waits until it has flushed everything the new primary wrote: only then is the
//!    pair as safe as before, and only then may the next failover come.
//!
//! Each failover goes into the history (`failovers.jsonl`) as a crash (`Event::Crash`) from the
//! moment the link stopped to the moment the promoted node took writes. With
//! `courier.durable_leases` off, a lease-only transaction commits without waiting for its WAL
//! flush, and so without waiting for the standby: the checker accepts that such a lease is
//! forgotten only when it was taken within `checker::FORGET_WINDOW_US` before the link stopped
//! (the WAL writer's delay) or while it was stopped. With durable leases on, the events say so and
//! the checker accepts no forgotten lease at all.
//!
//! At the end the workers stop, the queue is drained on the last primary, and the checker judges
//! the whole history across every failover: lost, unexpected, stale acks, double leases,
//! unexplained redeliveries, exactly-once. The report adds, per failover, how long the link was
//! held, how long until the promoted node took writes, until consumers leased again (by the
//! server clock of their leases), and until the old primary was back as a synchronous standby.
//! `--expect-loss` (with `--replication async`) passes only if the checker finds lost messages.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::checker;
use crate::cluster::Cluster;
use crate::faults::{self, Worker, signal, unix_micros};
use crate::history::{self, Event, Outcome, Writer};
use crate::rng::Rng;
use crate::{Args, DB, connect, die};

/// The flags `failover` takes.
pub const FLAGS: &[&str] = &[
    "seed",
    "failovers",
    "dir",
    "port",
    "producers",
    "consumers",
    "replication",
    "durable-leases",
    "expect-loss",
    "keep",
];

/// The consumers' visibility timeout, milliseconds (the queue's own is 2 s too).
const VT_MS: u64 = 2000;
/// How long the controller waits for a standby to stream and catch up.
const CATCH_UP: Duration = Duration::from_secs(90);
const NAMES: [&str; 2] = ["node_a", "node_b"];

struct Config {
    seed: u64,
    failovers: usize,
    dir: PathBuf,
    port: u16,
    producers: u32,
    consumers: u32,
    sync: bool,
    durable_leases: bool,
    expect_loss: bool,
    keep: bool,
}

impl Config {
    fn parse(args: &Args) -> Config {
        let seed: u64 = args.get("seed", 1);
        Config {
            seed,
            failovers: args.get("failovers", 5),
            dir: PathBuf::from(
                args.str("dir")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("/tmp/courier-failover-{seed}")),
            ),
            port: args.get("port", 55650),
            producers: args.get("producers", 3),
            consumers: args.get("consumers", 4),
            sync: match args.str("replication").unwrap_or("sync") {
                "sync" => true,
                "async" => false,
                other => die(&format!("--replication must be sync or async, not {other}")),
            },
            durable_leases: match args.str("durable-leases").unwrap_or("off") {
                "on" => true,
                "off" => false,
                other => die(&format!("--durable-leases must be on or off, not {other}")),
            },
            expect_loss: args.str("expect-loss").is_some(),
            keep: args.str("keep").is_some(),
        }
    }

    fn history(&self) -> PathBuf {
        self.dir.join("history")
    }
}

struct Node {
    name: &'static str,
    cluster: Cluster,
}

impl Node {
    /// What identifies this node in postgresql.conf; written after every copy of another node's
    /// configuration (pg_basebackup, pg_rewind). `cluster_name` is also the name its walreceiver
    /// gives the primary (`application_name` in pg_stat_replication).
    fn own_conf(&self) -> Vec<String> {
        vec![
            format!("port = {}", self.cluster.port),
            format!("unix_socket_directories = '{}'", self.cluster.dir.display()),
            format!("cluster_name = '{}'", self.name),
        ]
    }

    fn admin_info(&self) -> String {
        self.cluster.conninfo("postgres", "postgres", "courier-fault-failover")
    }

    /// Runs statements on this node as the superuser, from a fresh connection (retried while the
    /// node starts); the rows of the last one, as text.
    async fn sql(&self, statements: &str) -> Result<Vec<Vec<String>>, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            if let Some(c) = connect(&self.admin_info()).await {
                break c;
            }
            if Instant::now() > deadline {
                return Err(format!("{}: cannot connect", self.name));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let messages = tokio::time::timeout(Duration::from_secs(60), client.simple_query(statements))
            .await
            .map_err(|_| format!("{}: no answer in 60 s to {statements}", self.name))?
            .map_err(|e| format!("{}: {statements}: {e}", self.name))?;
        let mut rows = Vec::new();
        for m in messages {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                rows.push((0..r.len()).map(|i| r.get(i).unwrap_or("").to_string()).collect());
            }
        }
        Ok(rows)
    }
}

/// One failover, for the report.
struct Record {
    from: &'static str,
    to: &'static str,
    hold_ms: u64,
    /// Microseconds since the Unix epoch: the primary was killed, the promoted node took
    /// writes, the old primary was a caught-up standby again.
    killed_at: i64,
    writable_at: i64,
    rejoined_at: i64,
    rewind_ms: u128,
    /// How long `pg_ctl promote` took, and from the kill until the old primary's processes were
    /// gone (reaped).
    promote_ms: u128,
    gone_ms: u128,
}

/// The two nodes, which one is the primary, and the workers and clusters to stop if the
/// controller panics.
struct Pair {
    nodes: [Node; 2],
    primary: usize,
    sync: bool,
    workers: Vec<Worker>,
    stop_file: PathBuf,
    done: bool,
}

impl Drop for Pair {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // A panic in the controller: leave no worker or server behind.
        let _ = std::fs::write(&self.stop_file, b"");
        for w in &mut self.workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        for n in &self.nodes {
            n.cluster.stop("immediate");
        }
    }
}

impl Pair {
    fn primary(&self) -> &Node {
        &self.nodes[self.primary]
    }

    fn standby(&self) -> &Node {
        &self.nodes[1 - self.primary]
    }

    /// The workers' connection string: both nodes, whichever takes writes.
    fn conninfo(&self, user: &str, app: &str) -> String {
        let [a, b] = &self.nodes;
        format!(
            "host={},{} port={},{} user={user} dbname={DB} application_name={app} connect_timeout=10 \
             target_session_attrs=read-write options='-c statement_timeout=20000'",
            a.cluster.dir.display(),
            b.cluster.dir.display(),
            a.cluster.port,
            b.cluster.port
        )
    }

    /// Makes the standby the primary's synchronous standby (sync) or none (async), then waits
    /// until it streams and has flushed everything the primary wrote until then.
    async fn join(&self) -> Result<(), String> {
        let (p, s) = (self.primary(), self.standby());
        let names = if self.sync { s.name } else { "" };
        p.sql(&format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'")).await?;
        p.sql("SELECT pg_reload_conf()").await?;
        let target = p.sql("SELECT pg_current_wal_lsn()").await?[0][0].clone();
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let rows = p
                .sql(&format!(
                    "SELECT state, sync_state, flush_lsn >= '{target}' FROM pg_stat_replication \
                     WHERE application_name = '{}'",
                    s.name
                ))
                .await?;
            if let Some(r) = rows.first()
                && r[0] == "streaming"
                && r[2] == "t"
                && (!self.sync || r[1] == "sync")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not catch up with {} in {CATCH_UP:?}: {rows:?}", s.name, p.name));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One failover (see the module comment); the history gets its crash event as soon as the
    /// promoted node takes writes.
    async fn failover(
        &mut self,
        hold_ms: u64,
        durable_leases: bool,
        log: &mut Writer,
    ) -> Result<Record, String> {
        let old = self.primary;
        let new = 1 - old;
        let (from, to) = (self.nodes[old].name, self.nodes[new].name);

        // 1. The link stalls.
        let sender = self.nodes[old]
            .sql(&format!("SELECT pid FROM pg_stat_replication WHERE application_name = '{to}'"))
            .await?
            .first()
            .and_then(|r| r[0].parse::<u32>().ok())
            .ok_or_else(|| format!("{from} has no walsender for {to}"))?;
        let held_at = unix_micros();
        signal(sender, libc::SIGSTOP);
        tokio::time::sleep(Duration::from_millis(hold_ms)).await;

        // 2. The primary dies, every process at once (the stopped walsender too).
        let killed_at = unix_micros();
        let kill = Instant::now();
        let killed = self.nodes[old].cluster.kill9_signal(true);

        // 3. Promotion, without the synchronous standby it inherited.
        let n = &self.nodes[new];
        n.sql("ALTER SYSTEM SET synchronous_standby_names = ''").await?;
        n.sql("SELECT pg_reload_conf()").await?;
        let data = n.cluster.data().display().to_string();
        let promote = Instant::now();
        n.cluster.program("pg_ctl", &["-D", &data, "-w", "-t", "60", "promote"])?;
        let promote_ms = promote.elapsed().as_millis();
        let writable_at = unix_micros();
        log.log(&Event::Crash { at: held_at, until: writable_at, durable_leases });
        self.primary = new;
        n.sql("CHECKPOINT").await?;
        n.cluster.amcheck(DB).map_err(|e| format!("{to} after its promotion: {e}"))?;

        // 4. The old primary rewound, as a standby of the new one, once its processes are gone
        // (pg_rewind refuses a data directory whose postmaster still shows; on this machine
        // killed processes can take seconds to be reaped, so the promotion does not wait for it).
        if let Some(k) = killed {
            k.wait();
        }
        let gone_ms = kill.elapsed().as_millis();
        let rewind = Instant::now();
        let o = &self.nodes[old];
        let source =
            format!("host={} port={} user=postgres dbname=postgres", n.cluster.dir.display(), n.cluster.port);
        let target = o.cluster.data().display().to_string();
        o.cluster.program("pg_rewind", &["--target-pgdata", &target, "--source-server", &source, "-R"])?;
        o.cluster.append_conf(&o.own_conf());
        let rewind_ms = rewind.elapsed().as_millis();
        o.cluster.start();

        // 5. The pair is whole again.
        self.join().await?;
        Ok(Record {
            from,
            to,
            hold_ms,
            killed_at,
            writable_at,
            rejoined_at: unix_micros(),
            rewind_ms,
            gone_ms,
            promote_ms,
        })
    }
}

/// node_a initialised and set up as `run` sets up its cluster; node_b cloned from it; the pair
/// joined.
async fn start(cfg: &Config) -> Pair {
    let _ = std::fs::remove_dir_all(&cfg.dir);
    let conf = vec![
        "synchronous_commit = on".to_string(),
        format!("courier.durable_leases = {}", if cfg.durable_leases { "on" } else { "off" }),
        // pg_rewind reads the old primary's WAL back to the last checkpoint both nodes share, and
        // the rewound node streams from there.
        "wal_keep_size = '512MB'".into(),
        // A PostgreSQL 15 standby whose stream broke retries it every wal_retrieve_retry_interval
        // (5 s by default), and a promotion that comes during that wait waits it out: measured
        // here, 5 s of the time to writes.
        "wal_retrieve_retry_interval = '500ms'".into(),
        "hot_standby = on".into(),
        format!("cluster_name = '{}'", NAMES[0]),
    ];
    let a = Cluster::init(&cfg.dir.join("a"), cfg.port, &conf);
    a.start();
    crate::setup(&a, None).await;
    let b = Cluster::at(&cfg.dir.join("b"), cfg.port + 1);
    let (dir, port, data) = (a.dir.display().to_string(), a.port.to_string(), b.data().display().to_string());
    if let Err(e) = a.program(
        "pg_basebackup",
        &["-D", &data, "-R", "-X", "stream", "-c", "fast", "-h", &dir, "-p", &port, "-U", "postgres"],
    ) {
        a.stop("immediate");
        die(&e);
    }
    let b = Node { name: NAMES[1], cluster: b };
    b.cluster.append_conf(&b.own_conf());
    b.cluster.start();
    std::fs::create_dir_all(cfg.history()).expect("history directory");
    let pair = Pair {
        nodes: [Node { name: NAMES[0], cluster: a }, b],
        primary: 0,
        sync: cfg.sync,
        workers: Vec::new(),
        stop_file: cfg.history().join("stop"),
        done: false,
    };
    if let Err(e) = pair.join().await {
        panic!("the first standby did not join: {e}");
    }
    pair
}

fn spawn_worker(pair: &Pair, hist: &Path, role: &str, id: u32, seed: u64, tx: bool) -> Worker {
    let user = if role == "producer" { "fault_producer" } else { "fault_consumer" };
    let child = Command::new(std::env::current_exe().expect("own path"))
        .args(["worker", "--role", role, "--id", &id.to_string(), "--seed", &seed.to_string()])
        .args(["--conninfo", &pair.conninfo(user, &format!("courier-fault-{role}-{id}"))])
        .args(["--stop-file", &hist.join("stop").display().to_string()])
        .args(["--vt-ms", &VT_MS.to_string(), "--transactional", &tx.to_string()])
        .spawn()
        .expect("spawn a worker");
    Worker { child, consumer: role == "consumer" }
}

pub async fn main(args: &Args) -> bool {
    let cfg = Config::parse(args);
    let mut pair = start(&cfg).await;
    let hist = cfg.history();
    println!(
        "courier-fault failover: seed {}, {} failovers, {} producers, {} consumers, {} replication, \
         durable_leases={}",
        cfg.seed,
        cfg.failovers,
        cfg.producers,
        cfg.consumers,
        if cfg.sync { "synchronous" } else { "asynchronous" },
        cfg.durable_leases
    );
    let mut rng = Rng::new(cfg.seed);
    for i in 0..cfg.producers {
        let w = spawn_worker(&pair, &hist, "producer", i + 1, rng.next_u64(), false);
        pair.workers.push(w);
    }
    for i in 0..cfg.consumers {
        // Half the consumers ack in the same transaction as their own write (exactly-once).
        let w = spawn_worker(&pair, &hist, "consumer", 100 + i + 1, rng.next_u64(), i % 2 == 1);
        pair.workers.push(w);
    }
    let mut log = Writer::create(&hist.join("failovers.jsonl")).expect("failover log");
    let started = Instant::now();
    let mut records = Vec::new();
    let mut findings = Vec::new();
    for n in 1..=cfg.failovers {
        tokio::time::sleep(Duration::from_millis(rng.range(2000, 5000))).await;
        let hold_ms = rng.range(100, 800);
        let at = started.elapsed().as_secs_f64();
        match pair.failover(hold_ms, cfg.durable_leases, &mut log).await {
            Ok(r) => {
                println!(
                    "  [{at:5.1} s] failover {n}: {} killed after its link stalled {} ms; {} took writes \
                     {:.2} s after the kill (pg_ctl promote {:.2} s), pg_amcheck clean; {} gone after \
                     {:.2} s, rewound in {:.1} s, a caught-up {} standby {:.1} s after the kill",
                    r.from,
                    r.hold_ms,
                    r.to,
                    (r.writable_at - r.killed_at) as f64 / 1e6,
                    r.promote_ms as f64 / 1000.0,
                    r.from,
                    r.gone_ms as f64 / 1000.0,
                    r.rewind_ms as f64 / 1000.0,
                    if cfg.sync { "synchronous" } else { "asynchronous" },
                    (r.rejoined_at - r.killed_at) as f64 / 1e6
                );
                records.push(r);
            }
            Err(e) => {
                println!("  [{at:5.1} s] failover {n} failed: {e}");
                findings.push(format!("failover {n}: {e}"));
                break;
            }
        }
    }
    // The last primary works a while with its standby back before the workers stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    faults::stop_workers(&pair.stop_file, &mut pair.workers).await;
    let valid = verdict(&cfg, &mut pair, &records, findings).await;
    pair.done = true;
    valid
}

/// Drain the last primary, check it, stop both nodes, check the history, print the report.
async fn verdict(cfg: &Config, pair: &mut Pair, records: &[Record], mut findings: Vec<String>) -> bool {
    let hist = cfg.history();
    let primary = &pair.primary().cluster;
    let leftover = crate::drain(primary, &hist, VT_MS, crate::worker::Workload::Plain).await;
    let processed = crate::processed_counts(primary).await;
    std::fs::write(cfg.dir.join("processed.json"), serde_json::to_string(&processed).expect("json"))
        .expect("processed.json");
    if let Err(e) = primary.amcheck(DB) {
        findings.push(format!("at the end: {e}"));
    }
    for n in &pair.nodes {
        n.cluster.stop("fast");
        findings.extend(n.cluster.crash_lines().into_iter().map(|l| format!("{} server log: {l}", n.name)));
    }
    if leftover != 0 {
        findings.push(format!("{leftover} messages were still in the queue after the drain"));
    }
    let events = history::read_dir(&hist).expect("read the history");
    let report = checker::check(&events, &processed);
    // pg_amcheck ran on every promoted node and on the last primary at the end.
    let amchecks = records.len() + 1;
    let by_kind = format!("failover {}", records.len());
    crate::print_report(&report, crate::operations(&events), records.len(), &by_kind, amchecks, &findings);
    print_recovery(records, &events);
    if records.len() < cfg.failovers && findings.is_empty() {
        findings.push(format!("{} of {} failovers happened", records.len(), cfg.failovers));
    }
    if cfg.expect_loss {
        let detected = !report.lost.is_empty();
        println!(
            "negative control: {}",
            if detected {
                "the checker found lost messages, as it must"
            } else {
                "NO LOSS FOUND: the control failed"
            }
        );
        if detected && !cfg.keep {
            let _ = std::fs::remove_dir_all(&cfg.dir);
        }
        return detected;
    }
    let valid = report.valid() && findings.is_empty();
    println!("result: {}", if valid { "PASS" } else { "FAIL" });
    if valid && !cfg.keep {
        let _ = std::fs::remove_dir_all(&cfg.dir);
    } else {
        println!("history kept in {}", cfg.dir.display());
    }
    valid
}

/// Per failover, how long until consumers leased again: the first committed lease on the promoted
/// node, by the server clock the lease reports (both nodes share this machine's clock), from the
/// kill. Leases before the promotion are left out: a backend the postmaster forked just before the
/// kill serves until it notices its postmaster is gone, and a lease-only commit there returns.
fn print_recovery(records: &[Record], events: &[Event]) {
    if records.is_empty() {
        return;
    }
    let leased: Vec<i64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Lease { outcome: Outcome::Ok, items, w, .. } if *w != 0 => {
                Some(items.iter().map(|d| d.leased_at()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect();
    let mut back = Vec::new();
    for r in records {
        let first = leased.iter().filter(|t| **t >= r.writable_at).min();
        back.push(first.map(|t| (t - r.killed_at) as f64 / 1e6));
    }
    let stat = |xs: &[f64]| {
        let max = xs.iter().cloned().fold(0.0, f64::max);
        let mean = xs.iter().sum::<f64>() / xs.len().max(1) as f64;
        format!("mean {mean:.2} s, max {max:.2} s")
    };
    let writable: Vec<f64> = records.iter().map(|r| (r.writable_at - r.killed_at) as f64 / 1e6).collect();
    let rejoined: Vec<f64> = records.iter().map(|r| (r.rejoined_at - r.killed_at) as f64 / 1e6).collect();
    let leasing: Vec<f64> = back.iter().flatten().cloned().collect();
    let held: Vec<f64> = records.iter().map(|r| r.hold_ms as f64 / 1000.0).collect();
    println!("failovers: {}; link stalled before the kill: {}", records.len(), stat(&held));
    let gone: Vec<f64> = records.iter().map(|r| r.gone_ms as f64 / 1000.0).collect();
    let promote: Vec<f64> = records.iter().map(|r| r.promote_ms as f64 / 1000.0).collect();
    println!("  kill -> promoted node takes writes: {}", stat(&writable));
    println!("    of which pg_ctl promote: {}", stat(&promote));
    println!("  kill -> the old primary's processes gone (reaped): {}", stat(&gone));
    println!(
        "  kill -> consumers lease again: {} ({} of {} failovers)",
        stat(&leasing),
        leasing.len(),
        records.len()
    );
    println!("  kill -> old primary rewound, streaming and caught up: {}", stat(&rejoined));
}
