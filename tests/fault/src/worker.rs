//! Producer and consumer processes. Each is its own OS process (so the harness can freeze it
//! with SIGSTOP), with one connection that it re-opens whenever a fault closes it, and writes
//! every operation it completes to its history file.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::history::{Delivery, Event, Outcome, Writer};
use crate::rng::Rng;

pub const QUEUE: &str = "fault";

/// A lease statement of the harness: the columns `deliveries` reads, from `$from`.
macro_rules! lease_query {
    ($from:literal) => {
        concat!(
            "SELECT l.id, l.receipt::text, (l.payload->>'v')::int8, l.attempt, \
                    (extract(epoch FROM l.lease_expires_at) * 1000000)::int8 ",
            $from
        )
    };
}
pub(crate) use lease_query;

/// The rows of a `lease_query!`, leased with a visibility timeout of `vt_us` microseconds.
pub fn deliveries(rows: &[tokio_postgres::Row], vt_us: i64) -> Vec<Delivery> {
    rows.iter()
        .map(|r| Delivery {
            id: r.get(0),
            receipt: r.get(1),
            v: r.get::<_, i64>(2) as u64,
            attempt: r.get(3),
            exp: r.get(4),
            vt: vt_us,
        })
        .collect()
}

pub struct Config {
    pub id: u32,
    pub conninfo: String,
    pub stop_file: PathBuf,
    pub seed: u64,
    /// Visibility timeout of the consumers' leases, milliseconds.
    pub vt_ms: u64,
    /// Consumers only: ack in the same transaction as a write of their own (strict ack).
    pub transactional: bool,
}

/// What went wrong with a statement, as far as the client can tell.
enum Failure {
    /// The connection is gone (a crash, a restart, pg_terminate_backend) or timed out: the
    /// SQLSTATE the server sent, or the client's own words (`checker::TOLERATED` lists both).
    Connection(String),
    /// The server refused the statement with this SQLSTATE (or the client failed in a way no
    /// fault explains: "client"); the connection is still usable.
    Sql(String, String),
    /// A strict ack found its lease gone (QC001): expected, the transaction rolls back.
    LeaseLost,
}

fn classify(e: &tokio_postgres::Error) -> Failure {
    match e.as_db_error() {
        Some(db) if db.code().code() == "QC001" => Failure::LeaseLost,
        // 57P01 admin shutdown / terminate, 57P02 crash shutdown, 57P03 cannot connect now.
        Some(db) if !db.code().code().starts_with("57P") && !db.code().code().starts_with("08") => {
            Failure::Sql(db.code().code().to_string(), db.message().to_string())
        }
        Some(db) => Failure::Connection(db.code().code().to_string()),
        None => {
            // The kind of a client-side error is the first part of its text. Only the kinds a
            // lost server explains are connection failures: a row the harness cannot read is its
            // own bug and must fail the run.
            let text = e.to_string();
            let kind = text.split(": ").next().unwrap_or_default();
            if CONNECTION_KINDS.contains(&kind) {
                Failure::Connection(kind.to_string())
            } else {
                Failure::Sql("client".into(), text)
            }
        }
    }
}

/// Whether an error means the connection is gone (as a fault ends it), rather than a refused
/// statement.
pub fn lost_connection(e: &tokio_postgres::Error) -> bool {
    matches!(classify(e), Failure::Connection(_))
}

/// tokio-postgres's words for the client-side errors a fault causes.
const CONNECTION_KINDS: [&str; 4] = [
    "connection closed",
    "error communicating with the server",
    "error connecting to server",
    "timeout waiting for server",
];

const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The label of a statement that outlived `STATEMENT_TIMEOUT` (the server's own 20 s timeout,
/// 57014, comes first and fails the run; this one means no answer at all).
pub const CLIENT_TIMEOUT: &str = "client timeout";

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(Failure::Connection(CLIENT_TIMEOUT.into())),
    }
}

struct Session {
    cfg: Config,
    client: Option<Rc<Client>>,
    history: Writer,
    rng: Rng,
}

impl Session {
    fn stopping(&self) -> bool {
        self.cfg.stop_file.exists()
    }

    /// The connection, re-opened (with backoff) if a fault closed it; None once stopping.
    async fn client(&mut self) -> Option<Rc<Client>> {
        let mut backoff = 50;
        while self.client.as_ref().is_none_or(|c| c.is_closed()) {
            if self.stopping() {
                return None;
            }
            match tokio_postgres::connect(&self.cfg.conninfo, NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    self.client = Some(Rc::new(client));
                }
                Err(e) => {
                    self.failed(&classify(&e), "connect");
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                    backoff = (backoff * 2).min(1000);
                }
            }
        }
        self.client.clone()
    }

    /// Records a failure: one the harness expects as tolerated (and drops a broken
    /// connection), any other as an error (the run fails).
    fn failed(&mut self, f: &Failure, what: &str) {
        let e = match f {
            Failure::LeaseLost => Event::Tolerated { w: self.cfg.id, code: "QC001".into() },
            Failure::Connection(code) => {
                self.client = None;
                Event::Tolerated { w: self.cfg.id, code: code.clone() }
            }
            Failure::Sql(code, message) => {
                Event::Error { w: self.cfg.id, what: format!("{what}: {code} {message}") }
            }
        };
        self.history.log(&e);
    }

    async fn pause(&mut self, lo: u64, hi: u64) {
        let ms = self.rng.range(lo, hi);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Runs `BEGIN; <work>; COMMIT` and says how it ended: `ok` with the work's value when the
/// commit was acknowledged, `fail` when the transaction certainly rolled back (an error before
/// COMMIT was sent, or `rollback`), `info` when the COMMIT's outcome is unknown.
async fn transaction<T>(
    s: &mut Session,
    what: &str,
    rollback: bool,
    work: impl AsyncFnOnce(&Client) -> Result<T, Failure>,
) -> (Outcome, Option<T>) {
    let Some(c) = s.client().await else { return (Outcome::Fail, None) };
    if let Err(f) = timed(c.batch_execute("BEGIN")).await {
        s.failed(&f, what);
        return (Outcome::Fail, None);
    }
    match work(&c).await {
        Err(f) => {
            let _ = timed(c.batch_execute("ROLLBACK")).await;
            s.failed(&f, what);
            (Outcome::Fail, None)
        }
        Ok(value) if rollback => {
            let _ = timed(c.batch_execute("ROLLBACK")).await;
            (Outcome::Fail, Some(value))
        }
        Ok(value) => match timed(c.batch_execute("COMMIT")).await {
            Ok(()) => (Outcome::Ok, Some(value)),
            Err(f) => {
                // Even a server error here may follow a durable commit (a backend terminated
                // right after flushing its commit record): unknown.
                s.failed(&f, what);
                s.client = None;
                (Outcome::Info, Some(value))
            }
        },
    }
}

pub async fn producer(cfg: Config) {
    let history =
        Writer::create(&cfg.stop_file.with_file_name(format!("p{}.jsonl", cfg.id))).expect("history");
    let rng = Rng::new(cfg.seed);
    let mut s = Session { cfg, client: None, history, rng };
    let mut seq: u64 = 0;
    while !s.stopping() {
        let kind = s.rng.weighted(&[70, 20, 10]); // one message, a batch, a rolled-back one
        let n = if kind == 1 { s.rng.range(2, 8) } else { 1 };
        let vals: Vec<u64> = (0..n)
            .map(|_| {
                seq += 1;
                (u64::from(s.cfg.id) << 40) | seq
            })
            .collect();
        let docs: Vec<String> =
            vals.iter().map(|v| format!("{{\"v\": {v}, \"pad\": \"{}\"}}", "x".repeat(64))).collect();
        let (outcome, _) =
            transaction(&mut s, "enqueue", kind == 2, async |c| {
                if docs.len() == 1 {
                    timed(c.query_one("SELECT courier.enqueue($1, $2::text::jsonb)", &[&QUEUE, &docs[0]]))
                        .await
                        .map(|_| ())
                } else {
                    timed(c.query(
                        "SELECT id FROM courier.enqueue_batch($1, $2::text[]::jsonb[])",
                        &[&QUEUE, &docs],
                    ))
                    .await
                    .map(|_| ())
                }
            })
            .await;
        let e = Event::Enqueue { w: s.cfg.id, vals, outcome };
        s.history.log(&e);
        s.pause(15, 45).await;
    }
}

pub async fn consumer(cfg: Config) {
    let history =
        Writer::create(&cfg.stop_file.with_file_name(format!("c{}.jsonl", cfg.id))).expect("history");
    let rng = Rng::new(cfg.seed);
    let vt_us = (cfg.vt_ms * 1000) as i64;
    let vt = format!("{} milliseconds", cfg.vt_ms);
    let mut s = Session { cfg, client: None, history, rng };
    while !s.stopping() {
        let batch = s.rng.range(1, 4) as i32;
        let wait = if s.rng.chance(0.3) { "200 milliseconds" } else { "0" };
        let (outcome, rows) = transaction(&mut s, "lease", false, async |c| {
            timed(c.query(
                lease_query!("FROM courier.lease($1, $2, $3::text::interval, $4::text::interval) AS l"),
                &[&QUEUE, &batch, &vt, &wait],
            ))
            .await
        })
        .await;
        let items = deliveries(&rows.unwrap_or_default(), vt_us);
        let e = Event::Lease { w: s.cfg.id, outcome, items: items.clone() };
        s.history.log(&e);
        if outcome != Outcome::Ok {
            continue;
        }
        if items.is_empty() {
            s.pause(5, 30).await;
            continue;
        }
        for d in items {
            if s.stopping() || s.client.is_none() {
                break; // the rest expire and are delivered again
            }
            s.pause(0, 5).await;
            match s.rng.weighted(&[800, 100, 60, 30, 10]) {
                0 => ack(&mut s, &d).await,
                1 => nack(&mut s, &d).await,
                2 => {
                    extend(&mut s, &d).await;
                    ack(&mut s, &d).await;
                }
                3 => {} // abandoned, as by a consumer that died
                _ => {
                    // Too slow: the lease expires first, so the ack comes late.
                    let late = s.cfg.vt_ms + 200;
                    s.pause(late, late + 300).await;
                    ack(&mut s, &d).await;
                }
            }
        }
    }
}

async fn ack(s: &mut Session, d: &Delivery) {
    let tx = s.cfg.transactional;
    let id = s.cfg.id as i32;
    let v = d.v as i64;
    let (outcome, result) = if tx {
        // The exactly-once pattern: the consumer's own write and a strict ack in one transaction.
        // A lost lease (QC001) rolls both back, which is a definite "false".
        let mut lost = false;
        let r = transaction(s, "ack", false, async |c| {
            timed(c.execute("INSERT INTO fault_app.processed (v, worker) VALUES ($1, $2)", &[&v, &id]))
                .await?;
            match timed(c.query_one("SELECT courier.ack($1::text::uuid, strict => true)", &[&d.receipt]))
                .await
            {
                Err(Failure::LeaseLost) => {
                    lost = true;
                    Err(Failure::LeaseLost)
                }
                other => other.map(|row| row.get::<_, bool>(0)),
            }
        })
        .await;
        if lost { (Outcome::Ok, Some(false)) } else { r }
    } else {
        transaction(s, "ack", false, async |c| {
            timed(c.query_one("SELECT courier.ack($1::text::uuid)", &[&d.receipt]))
                .await
                .map(|row| row.get::<_, bool>(0))
        })
        .await
    };
    let e = Event::Ack {
        w: s.cfg.id,
        v: d.v,
        id: d.id,
        receipt: d.receipt.clone(),
        tx,
        outcome,
        result: fold(outcome, result),
    };
    s.history.log(&e);
}

async fn nack(s: &mut Session, d: &Delivery) {
    let retry = format!("{} milliseconds", s.rng.range(0, 100));
    let (outcome, result) = transaction(s, "nack", false, async |c| {
        timed(c.query_one(
            "SELECT courier.nack($1::text::uuid, retry_in => $2::text::interval)",
            &[&d.receipt, &retry],
        ))
        .await
        .map(|row| row.get::<_, bool>(0))
    })
    .await;
    let e = Event::Nack {
        w: s.cfg.id,
        v: d.v,
        id: d.id,
        receipt: d.receipt.clone(),
        outcome,
        result: fold(outcome, result),
    };
    s.history.log(&e);
}

async fn extend(s: &mut Session, d: &Delivery) {
    let ms = s.cfg.vt_ms * 2;
    let vt = format!("{ms} milliseconds");
    let (outcome, result) = transaction(s, "extend", false, async |c| {
        timed(c.query_one(
            "SELECT courier.extend($1::text::uuid, $2::text::interval), (extract(epoch FROM now()) * 1000000)::int8",
            &[&d.receipt, &vt],
        ))
        .await
        .map(|row| (row.get::<_, bool>(0), row.get::<_, i64>(1)))
    })
    .await;
    // Unknown start: no bound (the checker then keeps the earlier expiry).
    let (res, exp) = match result {
        Some((r, t)) => (Some(r), t + (ms * 1000) as i64),
        None => (None, i64::MAX),
    };
    let e = Event::Extend {
        w: s.cfg.id,
        v: d.v,
        id: d.id,
        receipt: d.receipt.clone(),
        outcome,
        result: fold(outcome, res),
        exp,
    };
    s.history.log(&e);
}

/// A result is only known when the transaction committed.
fn fold<T>(outcome: Outcome, result: Option<T>) -> Option<T> {
    if outcome == Outcome::Ok { result } else { None }
}
