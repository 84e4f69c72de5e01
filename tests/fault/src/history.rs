//! The history: what every client did and what it saw, one JSON line per completed operation.
//!
//! Outcomes follow Jepsen: `ok` happened, `fail` definitely did not (the transaction rolled back),
//! `info` is unknown (the connection died while the commit was in flight).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

/// One message as a lease returned it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub v: u64,
    pub id: i64,
    pub receipt: String,
    pub attempt: i32,
    /// Lease expiry, microseconds since the Unix epoch (server clock).
    pub exp: i64,
    /// The visibility timeout the lease asked for, microseconds: leased at `exp - vt`.
    pub vt: i64,
}

impl Delivery {
    pub fn leased_at(&self) -> i64 {
        self.exp - self.vt
    }
}

/// One attempt of the controller's `ALTER EXTENSION courier UPDATE`, run from its own connection
/// while the workers work (`run --upgrade-from`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Upgrade {
    /// 1 for the first attempt; another comes only when the update is not in yet.
    pub attempt: u32,
    /// The version the database was created at, and the one it is updated to (the default).
    pub from: String,
    pub to: String,
    /// When the attempt began and when its outcome was known, microseconds since the Unix epoch.
    pub at: i64,
    pub until: i64,
    /// When it began, milliseconds after the workers started.
    pub offset_ms: u64,
    /// How long the ALTER statement took, if it returned.
    pub statement_us: Option<i64>,
    /// How long the transaction stayed open after the ALTER, before the fault or COMMIT.
    pub hold_ms: u64,
    /// The fault the controller injected while the update's transaction was open, before its
    /// COMMIT.
    pub interrupted_by: Option<String>,
    /// ok: committed; fail: certainly not (an error, or the backend holding the transaction was
    /// gone before COMMIT was sent); info: the connection died while it may have committed.
    pub outcome: Outcome,
    /// pg_extension.extversion, read after the attempt once the server was back.
    pub version: String,
    /// A failure other than a lost connection.
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Event {
    /// Values enqueued in one transaction.
    Enqueue {
        w: u32,
        vals: Vec<u64>,
        outcome: Outcome,
    },
    Lease {
        w: u32,
        outcome: Outcome,
        items: Vec<Delivery>,
    },
    /// `tx`: acked in the same transaction as the consumer's own write (the exactly-once
    /// pattern, strict ack). `result` is known only for `ok`.
    Ack {
        w: u32,
        v: u64,
        id: i64,
        receipt: String,
        tx: bool,
        outcome: Outcome,
        result: Option<bool>,
    },
    Nack {
        w: u32,
        v: u64,
        id: i64,
        receipt: String,
        outcome: Outcome,
        result: Option<bool>,
    },
    /// `exp`: a lower bound of the new expiry (the transaction's start plus the timeout).
    Extend {
        w: u32,
        v: u64,
        id: i64,
        receipt: String,
        outcome: Outcome,
        result: Option<bool>,
        exp: i64,
    },
    /// The controller crashed the server (kill -9 or immediate shutdown) at `at` and had it
    /// running again at `until`, microseconds since the Unix epoch. With `durable_leases` off,
    /// leases committed shortly before it or while it went down may be forgotten (see the
    /// checker).
    Crash {
        at: i64,
        until: i64,
        durable_leases: bool,
    },
    Upgrade(Upgrade),
    /// pg_extension.extversion and the default version the server offers, read by the controller
    /// at the end of a run that updated the extension.
    Version {
        version: String,
        default: String,
    },
    /// A worker's statement or connection attempt failed in a way the harness expects from its
    /// faults: `code` is the SQLSTATE, or the client's words for a lost connection. The checker
    /// counts them by code and fails the run on a code it does not document.
    Tolerated {
        w: u32,
        code: String,
    },
    /// A statement failed in a way the harness did not expect: the run fails.
    Error {
        w: u32,
        what: String,
    },
}

pub struct Writer(BufWriter<File>);

impl Writer {
    pub fn create(path: &Path) -> std::io::Result<Writer> {
        Ok(Writer(BufWriter::new(File::create(path)?)))
    }

    /// Appends an event and flushes it, so a worker that is killed loses nothing it recorded.
    pub fn log(&mut self, e: &Event) {
        serde_json::to_writer(&mut self.0, e).expect("history event serializes");
        self.0.write_all(b"\n").and_then(|_| self.0.flush()).expect("history file is writable");
    }
}

/// Reads every `*.jsonl` file in a directory.
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<Event>> {
    let mut events = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    for p in paths {
        for line in BufReader::new(File::open(&p)?).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            // A worker killed mid-write can leave a torn last line; everything before it counts.
            match serde_json::from_str(&line) {
                Ok(e) => events.push(e),
                Err(_) => eprintln!("{}: skipping a torn line", p.display()),
            }
        }
    }
    Ok(events)
}
