//! courier-fault: proves at-least-once delivery under crashes and faults, and fuzzes the API.
//! Usage: `USAGE` below (`courier-fault --help` prints it).
//!
//! `run` starts a throwaway cluster, runs producer and consumer processes against one queue while
//! injecting faults at random moments (seeded), then drains the queue and checks the history
//! (checker.rs). `--expect-loss` is the negative control: it succeeds only if the checker finds
//! lost messages (run it with `--synchronous-commit off`). `--upgrade-from` creates the database at
//! an old version of courier and updates it while the workers run (upgrade.rs). `failover` runs
//! the same workers against a primary and a standby through repeated failovers (failover.rs).
//! `check` re-checks a kept run.

mod checker;
mod cluster;
mod failover;
mod faults;
mod fuzz;
mod history;
mod rng;
mod upgrade;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cluster::Cluster;
use faults::{FAULTS, Fault, Injector, Sessions, Worker};
use history::{Event, Outcome, Writer};
use rng::Rng;
use tokio_postgres::{Client, NoTls};

const DB: &str = "courier_fault";

struct Args(HashMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            let key = args[i].trim_start_matches("--").to_string();
            if i + 1 < args.len() && !args[i + 1].starts_with("--") {
                map.insert(key, args[i + 1].clone());
                i += 2;
            } else {
                map.insert(key, "true".into());
                i += 1;
            }
        }
        Args(map)
    }

    fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.0.get(key) {
            Some(v) => v.parse().unwrap_or_else(|_| die(&format!("--{key}: cannot parse {v:?}"))),
            None => default,
        }
    }

    /// Refuses flags the command does not know, so a typo (or `--help`) does not start a run
    /// with defaults.
    fn only(&self, known: &[&str]) {
        for key in self.0.keys() {
            if !known.contains(&key.as_str()) {
                eprintln!("{USAGE}");
                std::process::exit(if key == "help" || key == "h" { 0 } else { 2 });
            }
        }
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

const USAGE: &str = "usage:
    courier-fault run  [--seed N] [--duration SECS] [--dir DIR] [--port N]
                       [--producers N] [--consumers N] [--synchronous-commit on|off]
                       [--durable-leases on|off] [--faults kill9,kill9-all,immediate,terminate,sigstop] [--expect-loss]
                       [--upgrade-from VERSION [--upgrade-at SECS] [--upgrade-interrupt seed|none|FAULT]] [--keep]
                       [--workload plain|groups]
    courier-fault failover [--seed N] [--failovers N] [--dir DIR] [--port N] [--producers N] [--consumers N]
                       [--replication sync|async] [--durable-leases on|off] [--expect-loss] [--keep]
    courier-fault fuzz [--seed N] [--calls N] [--dir DIR] [--port N] [--inject-crash] [--verbose]
    courier-fault check DIR";

fn die(msg: &str) -> ! {
    eprintln!("courier-fault: {msg}");
    std::process::exit(2);
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let cmd = argv.get(1).map(String::as_str).unwrap_or("");
    let args = Args::parse(&argv[2.min(argv.len())..]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let ok = match cmd {
        "run" => {
            args.only(&[
                "seed",
                "duration",
                "dir",
                "port",
                "producers",
                "consumers",
                "synchronous-commit",
                "durable-leases",
                "faults",
                "expect-loss",
                "upgrade-from",
                "upgrade-at",
                "upgrade-interrupt",
                "keep",
                "workload",
            ]);
            rt.block_on(run(&args))
        }
        "worker" => {
            rt.block_on(worker_main(&args));
            true
        }
        "failover" => {
            args.only(failover::FLAGS);
            rt.block_on(failover::main(&args))
        }
        "fuzz" => {
            args.only(&["seed", "calls", "dir", "port", "inject-crash", "verbose"]);
            rt.block_on(fuzz::main(&args))
        }
        "check" => {
            let dir = PathBuf::from(argv.get(2).unwrap_or_else(|| die("check DIR")));
            recheck(&dir)
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(if cmd == "--help" || cmd == "help" { 0 } else { 2 });
        }
    };
    std::process::exit(if ok { 0 } else { 1 });
}

async fn worker_main(args: &Args) {
    let cfg = worker::Config {
        id: args.get("id", 1),
        conninfo: args.str("conninfo").unwrap_or_else(|| die("--conninfo")).to_string(),
        stop_file: PathBuf::from(args.str("stop-file").unwrap_or_else(|| die("--stop-file"))),
        seed: args.get("seed", 1),
        vt_ms: args.get("vt-ms", 2000),
        transactional: args.get("transactional", false),
        workload: worker::Workload::parse(args.str("workload"))
            .unwrap_or_else(|| die("--workload plain|groups")),
    };
    match args.str("role") {
        Some("producer") => worker::producer(cfg).await,
        Some("consumer") => worker::consumer(cfg).await,
        _ => die("--role producer|consumer"),
    }
}

pub async fn connect(conninfo: &str) -> Option<Client> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await.ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(client)
}

/// Connects, retrying for up to a minute (the server may be recovering).
pub async fn connect_retry(conninfo: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(c) = connect(conninfo).await {
            return c;
        }
        if Instant::now() > deadline {
            die(&format!("cannot connect: {conninfo}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The database, its roles and the queue; courier at `version` (the default without one).
async fn setup(cluster: &Cluster, version: Option<&str>) {
    let admin = connect_retry(&cluster.conninfo("postgres", "postgres", "courier-fault-setup")).await;
    admin.batch_execute(&format!("CREATE DATABASE {DB}")).await.expect("create database");
    let c = connect_retry(&cluster.conninfo(DB, "postgres", "courier-fault-setup")).await;
    let version = version.map(|v| format!(" VERSION '{v}'")).unwrap_or_default();
    c.batch_execute(&format!(
        "CREATE EXTENSION courier{version};
         CREATE EXTENSION amcheck;
         SELECT courier.create_queue('{q}', visibility_timeout => '2 seconds', max_attempts => 0,
                                     retry_base => '50 milliseconds', retry_max => '200 milliseconds');
         CREATE ROLE fault_producer LOGIN;
         CREATE ROLE fault_consumer LOGIN;
         GRANT USAGE ON SCHEMA courier TO fault_producer, fault_consumer;
         SELECT courier.grant('{q}', 'enqueue', 'fault_producer');
         SELECT courier.grant('{q}', 'consume', 'fault_consumer');
         CREATE SCHEMA fault_app;
         CREATE TABLE fault_app.processed (v bigint NOT NULL, worker integer NOT NULL,
                                           at timestamptz NOT NULL DEFAULT clock_timestamp());
         GRANT USAGE ON SCHEMA fault_app TO fault_consumer;
         GRANT INSERT ON fault_app.processed TO fault_consumer;",
        q = worker::QUEUE
    ))
    .await
    .expect("set up the database");
}

/// The grouped workload's queues (worker.rs: `GROUP_QUEUES`), each recorded in the history with
/// its group settings for the checker.
async fn setup_groups(cluster: &Cluster, hist: &Path) {
    let c = connect_retry(&cluster.conninfo(DB, "postgres", "courier-fault-setup")).await;
    let dead = worker::DEAD_QUEUE;
    let mut sql = format!(
        "SELECT courier.create_queue('{dead}', visibility_timeout => '2 seconds', max_attempts => 0);
         SELECT courier.grant('{dead}', 'consume', 'fault_consumer');"
    );
    let mut log = Writer::create(&hist.join("setup.jsonl")).expect("setup history");
    for (q, on_dead, order) in worker::GROUP_QUEUES {
        sql.push_str(&format!(
            "SELECT courier.create_queue('{q}', visibility_timeout => '2 seconds', max_attempts => {max},
                                         dead_letter_queue => '{dead}', retry_base => '50 milliseconds',
                                         retry_max => '200 milliseconds', group_on_dead => '{on_dead}',
                                         group_order => '{order}');
             SELECT courier.grant('{q}', 'enqueue', 'fault_producer');
             SELECT courier.grant('{q}', 'consume', 'fault_consumer');",
            max = worker::MAX_ATTEMPTS
        ));
        log.log(&Event::Queue {
            name: q.into(),
            group_on_dead: on_dead.into(),
            group_order: order.into(),
            dead_letter_queue: Some(dead.into()),
        });
    }
    c.batch_execute(&sql).await.expect("create the grouped workload's queues");
}

/// A producer or consumer process of the run `cfg`.
fn spawn_worker(cfg: &RunConfig, cluster: &Cluster, role: &str, id: u32, seed: u64, tx: bool) -> Worker {
    let user = if role == "producer" { "fault_producer" } else { "fault_consumer" };
    let child = Command::new(std::env::current_exe().expect("own path"))
        .args(["worker", "--role", role, "--id", &id.to_string(), "--seed", &seed.to_string()])
        .args(["--conninfo", &cluster.conninfo(DB, user, &format!("courier-fault-{role}-{id}"))])
        .args(["--stop-file", &cfg.history().join("stop").display().to_string()])
        .args(["--vt-ms", &cfg.vt_ms.to_string(), "--transactional", &tx.to_string()])
        .args(["--workload", cfg.workload.name()])
        .spawn()
        .expect("spawn a worker");
    Worker { child, consumer: role == "consumer" }
}

/// A `run`'s settings, from its command line.
struct RunConfig {
    seed: u64,
    duration: Duration,
    port: u16,
    producers: u32,
    consumers: u32,
    sync: String,
    durable_leases: bool,
    expect_loss: bool,
    keep: bool,
    dir: PathBuf,
    enabled: Vec<Fault>,
    /// The consumers' visibility timeout, milliseconds.
    vt_ms: u64,
    upgrade: Option<upgrade::Plan>,
    workload: worker::Workload,
}

impl RunConfig {
    fn parse(args: &Args) -> RunConfig {
        let seed: u64 = args.get("seed", 1);
        let duration = Duration::from_secs(args.get("duration", 60));
        let upgrade_at = args.str("upgrade-at").map(|_| args.get("upgrade-at", 0.0));
        RunConfig {
            seed,
            duration,
            port: args.get("port", 55432),
            producers: args.get("producers", 3),
            consumers: args.get("consumers", 4),
            sync: args.str("synchronous-commit").unwrap_or("on").to_string(),
            durable_leases: match args.str("durable-leases").unwrap_or("off") {
                "on" => true,
                "off" => false,
                other => die(&format!("--durable-leases must be on or off, not {other}")),
            },
            expect_loss: args.str("expect-loss").is_some(),
            keep: args.str("keep").is_some(),
            dir: PathBuf::from(
                args.str("dir").map(str::to_string).unwrap_or_else(|| format!("/tmp/courier-fault-{seed}")),
            ),
            enabled: faults::parse(args.str("faults")),
            vt_ms: 2000,
            upgrade: upgrade::Plan::parse(
                args.str("upgrade-from"),
                upgrade_at,
                args.str("upgrade-interrupt"),
                duration,
            ),
            workload: worker::Workload::parse(args.str("workload"))
                .unwrap_or_else(|| die("--workload must be plain or groups")),
        }
    }

    fn history(&self) -> PathBuf {
        self.dir.join("history")
    }
}

async fn run(args: &Args) -> bool {
    let cfg = RunConfig::parse(args);
    let (cluster, mut upgrader) = start_cluster(&cfg).await;
    let mut rng = Rng::new(cfg.seed);
    let mut workers = spawn_workers(&cfg, &cluster, &mut rng);
    let injector = fault_loop(&cfg, &cluster, &mut rng, &workers, upgrader.as_mut()).await;
    let tally = Tally::of(&injector, &cfg.enabled);
    faults::stop_workers(&cfg.history().join("stop"), &mut workers).await;
    verdict(&cfg, &cluster, tally).await
}

/// Setup: a fresh cluster in the run's directory, started, with the database, its roles and the
/// queue; an empty history directory; with `--upgrade-from`, courier at that version and the
/// update's controller.
async fn start_cluster(cfg: &RunConfig) -> (Cluster, Option<upgrade::Upgrader>) {
    let _ = std::fs::remove_dir_all(&cfg.dir);
    let mut conf = vec![
        format!("synchronous_commit = {}", cfg.sync),
        format!("courier.durable_leases = {}", if cfg.durable_leases { "on" } else { "off" }),
    ];
    if cfg.sync == "off" {
        // The negative control: commits are acknowledged before their WAL is flushed, and the
        // WAL writer flushes only every two seconds.
        conf.push("wal_writer_delay = 2000".into());
    }
    let cluster = Cluster::init(&cfg.dir.join("pg"), cfg.port, &conf);
    cluster.start();
    let to = match &cfg.upgrade {
        Some(plan) => Some(upgrade::default_version(&cluster, &plan.from).await),
        None => None,
    };
    setup(&cluster, cfg.upgrade.as_ref().map(|p| p.from.as_str())).await;
    std::fs::create_dir_all(cfg.history()).expect("history directory");
    if cfg.workload == worker::Workload::Groups {
        if cfg.upgrade.is_some() {
            die("--workload groups needs message groups, which no released version has: no --upgrade-from");
        }
        setup_groups(&cluster, &cfg.history()).await;
    }
    let upgrader =
        cfg.upgrade.clone().zip(to).map(|(plan, to)| {
            upgrade::Upgrader::new(plan, to, cfg.seed, &cfg.enabled, &cluster, &cfg.history())
        });
    println!(
        "courier-fault: seed {}, {} s, workload {}, {} producers, {} consumers, synchronous_commit={}, \
         durable_leases={}, faults: {}",
        cfg.seed,
        cfg.duration.as_secs(),
        cfg.workload.name(),
        cfg.producers,
        cfg.consumers,
        cfg.sync,
        cfg.durable_leases,
        cfg.enabled.iter().map(|f| faults::name(*f)).collect::<Vec<_>>().join(",")
    );
    if let Some(u) = &upgrader {
        println!("  {}", u.describe());
    }
    (cluster, upgrader)
}

/// The producer and consumer processes, each with a seed from the run's generator.
fn spawn_workers(cfg: &RunConfig, cluster: &Cluster, rng: &mut Rng) -> Vec<Worker> {
    let mut workers = Vec::new();
    for i in 0..cfg.producers {
        workers.push(spawn_worker(cfg, cluster, "producer", i + 1, rng.next_u64(), false));
    }
    for i in 0..cfg.consumers {
        // Half the consumers ack in the same transaction as their own write.
        let tx = i % 2 == 1;
        workers.push(spawn_worker(cfg, cluster, "consumer", 100 + i + 1, rng.next_u64(), tx));
    }
    workers
}

/// The fault loop: a fault every 2–6 s (seeded) until two seconds before the end, and the update
/// (if any) between the two faults around its moment, or after the last one if the loop ends
/// before it, with the workers still running.
async fn fault_loop<'a>(
    cfg: &RunConfig,
    cluster: &'a Cluster,
    rng: &mut Rng,
    workers: &[Worker],
    mut upgrader: Option<&mut upgrade::Upgrader>,
) -> Injector<'a> {
    let weights = faults::weights(&cfg.enabled);
    let mut injector = Injector::new(cluster, &cfg.history(), cfg.durable_leases, cfg.vt_ms);
    let started = Instant::now();
    let deadline = started + cfg.duration;
    while Instant::now() + Duration::from_secs(2) < deadline {
        let gap =
            rng.range(2000, 6000).min(deadline.saturating_duration_since(Instant::now()).as_millis() as u64);
        let wake = Instant::now() + Duration::from_millis(gap);
        if let Some(u) = upgrader.as_deref_mut()
            && let Some(due) = u.due(started).filter(|due| *due <= wake)
        {
            faults::sleep_until(due).await;
            u.run(&mut injector, workers, started).await;
        }
        faults::sleep_until(wake).await;
        if Instant::now() >= deadline || weights.iter().all(|w| *w == 0) {
            break;
        }
        let fault = FAULTS[rng.weighted(&weights)].0;
        let at = started.elapsed().as_secs_f64();
        let began = Instant::now();
        injector.inject(fault, rng, workers, Sessions::Workers).await;
        println!("  [{at:5.1} s] {} ({:.1} s)", faults::name(fault), began.elapsed().as_secs_f64());
    }
    if let Some(u) = upgrader
        && let Some(due) = u.due(started)
    {
        faults::sleep_until(due).await;
        u.run(&mut injector, workers, started).await;
    }
    injector
}

/// What the fault loop did, for the report.
struct Tally {
    faults: usize,
    by_kind: String,
    amchecks: usize,
    findings: Vec<String>,
}

impl Tally {
    fn of(injector: &Injector, enabled: &[Fault]) -> Tally {
        let (faults, by_kind) = injector.tally(enabled);
        Tally { faults, by_kind, amchecks: injector.amchecks, findings: injector.findings.clone() }
    }
}

/// The verdict: drain the queue, check the server once more and stop it, check the history,
/// print the report. True if the run passed (or, with `--expect-loss`, if the checker found the
/// loss it must find).
async fn verdict(cfg: &RunConfig, cluster: &Cluster, mut tally: Tally) -> bool {
    let hist = cfg.history();
    let leftover = drain(cluster, &hist, cfg.vt_ms, cfg.workload).await;
    let processed = processed_counts(cluster).await;
    std::fs::write(cfg.dir.join("processed.json"), serde_json::to_string(&processed).expect("json"))
        .expect("processed.json");
    tally.amchecks += 1;
    if let Err(e) = cluster.amcheck(DB) {
        tally.findings.push(format!("at the end: {e}"));
    }
    if cfg.upgrade.is_some() {
        upgrade::record_final_version(cluster, &hist).await;
    }
    cluster.stop("fast");
    tally.findings.extend(cluster.crash_lines().into_iter().map(|l| format!("server log: {l}")));
    if leftover != 0 {
        tally.findings.push(format!("{leftover} messages were still in the queue after the drain"));
    }

    let events = history::read_dir(&hist).expect("read the history");
    let report = checker::check(&events, &processed);
    print_report(&report, operations(&events), tally.faults, &tally.by_kind, tally.amchecks, &tally.findings);
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
        if detected {
            let _ = std::fs::remove_dir_all(&cfg.dir);
        }
        return detected;
    }
    let valid = report.valid() && tally.findings.is_empty();
    println!("result: {}", if valid { "PASS" } else { "FAIL" });
    if valid && !cfg.keep {
        let _ = std::fs::remove_dir_all(&cfg.dir);
    } else {
        println!("history kept in {}", cfg.dir.display());
    }
    valid
}

/// Leases and acks everything left in the queues, once every lease a worker took has expired.
/// Returns how many messages were still there when the drain gave up (0 is right). The grouped
/// workload's dead-letter queue is drained with the others: under 'block' its dead letters hold
/// their groups until they are acked.
async fn drain(cluster: &Cluster, hist: &Path, vt_ms: u64, workload: worker::Workload) -> i64 {
    tokio::time::sleep(Duration::from_millis(vt_ms + 500)).await;
    let c = connect_retry(&cluster.conninfo(DB, "postgres", "courier-fault-drain")).await;
    let mut log = Writer::create(&hist.join("drain.jsonl")).expect("drain history");
    let queues = worker::queues(workload);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left: i64 = c
            .query_one(
                "SELECT count(*) FROM courier.message m JOIN courier.queue q USING (queue_id) \
                 WHERE q.name = ANY ($1)",
                &[&queues],
            )
            .await
            .expect("count")
            .get(0);
        if left == 0 || Instant::now() > deadline {
            return left;
        }
        let mut leased = 0;
        for queue in &queues {
            let rows = match workload {
                worker::Workload::Plain => {
                    c.query(worker::lease_query!("FROM courier.lease($1, 100, '60 seconds') AS l"), &[queue])
                        .await
                }
                worker::Workload::Groups => {
                    // A whole group's backlog at once: a hot group can be thousands behind, and one
                    // head per lease would not drain it in time.
                    c.query(worker::GROUP_LEASE, &[queue, &100i32, &"60 seconds", &"0", &100i32]).await
                }
            };
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    // Leasing is broken (an update that broke the library's statements, say): the
                    // run fails with the report, not with a panic that hides it.
                    let what = e
                        .as_db_error()
                        .map_or(e.to_string(), |d| format!("{} {}", d.code().code(), d.message()));
                    log.log(&Event::Error { w: 0, what: format!("drain lease: {what}") });
                    return left;
                }
            };
            let items = worker::deliveries(&rows, 60_000_000);
            let q = (workload == worker::Workload::Groups).then(|| queue.to_string());
            log.log(&Event::Lease { w: 0, outcome: Outcome::Ok, items: items.clone(), q });
            leased += items.len();
            if items.is_empty() {
                continue;
            }
            let receipts: Vec<String> = items.iter().map(|d| d.receipt.clone()).collect();
            let t0 = worker::micros();
            let acked = c
                .query_one("SELECT courier.ack_batch($1::text[]::uuid[], strict => true)", &[&receipts])
                .await;
            let at = Some((t0, worker::micros()));
            for d in &items {
                let (outcome, result) = match &acked {
                    Ok(_) => (Outcome::Ok, Some(true)),
                    Err(_) => (Outcome::Fail, None),
                };
                log.log(&Event::Ack {
                    w: 0,
                    v: d.v,
                    id: d.id,
                    receipt: d.receipt.clone(),
                    tx: false,
                    outcome,
                    result,
                    at,
                });
            }
            if let Err(e) = acked {
                log.log(&Event::Error { w: 0, what: format!("drain ack: {e}") });
            }
        }
        if leased == 0 {
            // Nacked messages waiting out their retry delay.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn processed_counts(cluster: &Cluster) -> HashMap<u64, i64> {
    let c = connect_retry(&cluster.conninfo(DB, "postgres", "courier-fault-check")).await;
    c.query("SELECT v, count(*) FROM fault_app.processed GROUP BY v", &[])
        .await
        .expect("processed")
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1)))
        .collect()
}

fn list<T: std::fmt::Display>(xs: &[T]) -> String {
    let shown: Vec<String> = xs.iter().take(5).map(|x| x.to_string()).collect();
    if xs.len() > 5 { format!("{} ... ({} in all)", shown.join("; "), xs.len()) } else { shown.join("; ") }
}

fn print_report(
    r: &checker::Report,
    events: usize,
    faults: usize,
    by_kind: &str,
    amchecks: usize,
    findings: &[String],
) {
    let [eo, ef, ei] = r.enqueue_tx;
    println!("operations: {events} recorded (enqueue transactions {eo} ok / {ef} failed / {ei} unknown)");
    println!("faults injected: {faults} ({by_kind}); pg_amcheck runs: {amchecks}");
    println!(
        "messages: {} confirmed, {} rolled back, {} unknown ({} of those delivered)",
        r.values[0], r.values[1], r.values[2], r.recovered
    );
    println!(
        "deliveries: {} from {} committed leases; duplicates {} ({} after the lease expired, {} after a nack); \
         leases forgotten in a crash: {}",
        r.deliveries,
        r.leases[0],
        r.duplicates,
        r.duplicates_after_expiry,
        r.duplicates_after_nack,
        r.forgotten_leases
    );
    println!(
        "acks: {} ok, {} unknown; late acks refused: {}; nacks {}; extends {}",
        r.acks[0], r.acks[2], r.acks_refused, r.nacks[0], r.extends[0]
    );
    println!(
        "processed in the ack transaction: {} messages, twice: {}",
        r.processed,
        r.processed_twice.len()
    );
    println!(
        "lost: {}, unexpected: {}, aborted reads: {}, stale acks accepted: {}, double leases: {}, \
         unexplained redeliveries: {}",
        r.lost.len(),
        r.unexpected.len(),
        r.aborted_reads.len(),
        r.stale_acks.len(),
        r.double_leases.len(),
        r.unexplained.len()
    );
    print_upgrade(r);
    print_groups(r);
    println!("failures the workers tolerated: {}", tolerated(r));
    for (name, items) in [
        ("lost", list(&r.lost)),
        ("unexpected", list(&r.unexpected)),
        ("aborted reads", list(&r.aborted_reads)),
        ("stale acks", list(&r.stale_acks)),
        ("double leases", list(&r.double_leases)),
        ("unexplained", list(&r.unexplained)),
        ("processed twice", list(&r.processed_twice)),
        ("ack without its write", list(&r.ack_without_write)),
        ("write without its ack", list(&r.write_without_ack)),
        ("update anomalies", list(&r.upgrade_anomalies)),
        ("group holds overlapping", list(&r.group_overlaps)),
        ("group order", list(&r.group_order)),
        ("group acks out of order", list(&r.group_early_acks)),
        ("groups starved", list(&r.group_starved)),
        ("worker errors", list(&r.errors)),
        ("findings", list(findings)),
    ] {
        if !items.is_empty() {
            println!("  {name}: {items}");
        }
    }
}

/// The group rules' figures, in a run of the grouped workload.
fn print_groups(r: &checker::Report) {
    if r.groups == 0 {
        return;
    }
    println!(
        "groups: {} with {} messages; {} group holds by committed leases; delivered by the drain at the end: {}; \
         dead letters: {}; released with \
         their group by a nack: {}; acks ahead of an earlier message of the same lease: {}; ready heads that \
         waited: {}, the most younger messages served before one: {} (bound {}; under 'fair' plus a turn of \
         every group)",
        r.groups,
        r.grouped_values,
        r.group_leases,
        r.drained,
        r.dead_letters,
        r.released_with_group,
        r.acks_ahead_in_lease,
        r.heads_waited,
        r.max_overtakes,
        checker::STARVE_BOUND
    );
    if let Some(worst) = &r.worst_wait {
        println!("  the head with the most: {worst}");
    }
    println!(
        "group holds overlapping: {}, first deliveries out of order: {}, acks before an earlier message: {}, \
         groups starved: {}",
        r.group_overlaps.len(),
        r.group_order.len(),
        r.group_early_acks.len(),
        r.group_starved.len()
    );
}

/// The update's attempts and the final version, in a run that updated.
fn print_upgrade(r: &checker::Report) {
    if r.upgrades.is_empty() && r.final_version.is_none() {
        return;
    }
    for (a, leases) in &r.upgrades {
        println!("{}; {leases} messages leased meanwhile", upgrade::describe(a));
    }
    let (version, default) = r.final_version.clone().unwrap_or_else(|| ("not recorded".into(), "?".into()));
    println!(
        "final extversion {version} (default {default}); update anomalies: {}",
        r.upgrade_anomalies.len()
    );
}

/// The operations a history records: tolerated failures are counted apart.
fn operations(events: &[Event]) -> usize {
    events.iter().filter(|e| !matches!(e, Event::Tolerated { .. })).count()
}

/// The tolerated failures by code, most frequent first, each with what causes it.
fn tolerated(r: &checker::Report) -> String {
    let mut seen: Vec<(&String, &usize)> = r.tolerated.iter().collect();
    seen.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if seen.is_empty() {
        return "none".into();
    }
    seen.iter()
        .map(|(code, n)| {
            let why = checker::TOLERATED.iter().find(|(c, _)| c == code).map_or("not expected", |(_, w)| w);
            format!("{code} ×{n} ({why})")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn recheck(dir: &Path) -> bool {
    let events = history::read_dir(&dir.join("history")).expect("read the history");
    let processed: HashMap<u64, i64> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("processed.json")).unwrap_or_else(|_| "{}".into()),
    )
    .expect("processed.json");
    let r = checker::check(&events, &processed);
    print_report(&r, operations(&events), 0, "not recorded", 0, &[]);
    println!("result: {}", if r.valid() { "PASS" } else { "FAIL" });
    r.valid()
}
