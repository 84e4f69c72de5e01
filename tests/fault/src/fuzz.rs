//! API fuzzer: thousands of random calls of every courier function, with random and extreme
//! arguments (proptest strategies, from a seed). Each call must succeed or fail with a clean
//! ERROR. The run fails on a lost connection (a crashed backend), on an internal error (XX000:
//! a Rust panic means an argument went unchecked), and on any "terminated by signal" or PANIC
//! line in the server log. `--inject-crash` kills a backend with SIGSEGV at the end, to show
//! that such a run fails.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tokio_postgres::types::ToSql;

use crate::cluster::Cluster;
use crate::{Args, connect, connect_retry};

const DB: &str = "courier_fuzz";

#[derive(Clone, Debug)]
enum Param {
    Text(Option<String>),
    Array(Option<Vec<Option<String>>>),
}

#[derive(Clone, Debug)]
struct Call {
    sql: String,
    params: Vec<Param>,
    /// Run as a role with USAGE on the schema and nothing else.
    as_nobody: bool,
}

/// Placeholders are written `?` and numbered here; `T` after one means "text", `A` "text[]".
fn call(template: &str, params: Vec<Param>) -> Call {
    let mut sql = String::new();
    let mut n = 0;
    for ch in template.chars() {
        if ch == '?' {
            n += 1;
            sql.push_str(&format!("${n}"));
        } else {
            sql.push(ch);
        }
    }
    Call { sql, params, as_nobody: false }
}

fn big(n: usize) -> String {
    "x".repeat(n)
}

fn opt(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    prop_oneof![1 => Just(None), 40 => s.prop_map(Some)]
}

fn queue() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![
        40 => prop_oneof![Just("fz_a".to_string()), Just("fz_b".to_string()), Just("fz_dlq".to_string())],
        1 => Just("fz_missing".to_string()),
        1 => Just(String::new()),
        1 => Just("x'; DROP TABLE courier.message; --".to_string()),
        1 => Just("$$".to_string()),
        1 => Just("ünï/cödé".to_string()),
        1 => "[a-z_:/.-]{1,80}",
        1 => (64usize..5000).prop_map(big),
        1 => Just(big(1 << 20)),
    ])
}

fn json() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![
        10 => Just("{}".to_string()),
        20 => any::<i64>().prop_map(|n| format!("{{\"n\": {n}, \"s\": \"it's -- /* $$ */\"}}")),
        1 => Just("[]".to_string()),
        1 => Just("null".to_string()),
        1 => Just("\"text\"".to_string()),
        1 => Just("{".to_string()),
        1 => Just("{\"a\": \"\\u0000\"}".to_string()),
        1 => (1usize..3000).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
        1 => (1usize..2_000_000).prop_map(|n| format!("{{\"big\": \"{}\"}}", big(n))),
        1 => "\\PC{0,50}".prop_map(|s| serde_json::to_string(&s).expect("json string")),
    ])
}

fn json_array() -> impl Strategy<Value = Option<Vec<Option<String>>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(vec![])),
        12 => proptest::collection::vec(json(), 1..8).prop_map(Some),
        1 => (990usize..1010).prop_map(|n| Some(vec![Some("{}".to_string()); n])),
    ]
}

fn interval() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![
        Just("0".to_string()),
        Just("1 microsecond".to_string()),
        Just("10 milliseconds".to_string()),
        Just("30 seconds".to_string()),
        Just("30 seconds".to_string()),
        Just("2 seconds".to_string()),
        Just("5 minutes".to_string()),
        Just("-1 second".to_string()),
        Just("1 month".to_string()),
        Just("2 years".to_string()),
        Just("100000 years".to_string()),
        Just("2147483647 days".to_string()),
        Just("1 hour".to_string()),
        Just("nonsense".to_string()),
    ])
}

/// A lease wait: short, so the fuzzer does not sleep its budget away.
fn wait() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![
        Just("0".to_string()),
        Just("5 milliseconds".to_string()),
        Just("-1 second".to_string()),
        Just("1 year".to_string()),
    ])
}

fn int() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![
        20 => (-2i64..20).prop_map(|n| n.to_string()),
        4 => (-5i64..1100).prop_map(|n| n.to_string()),
        1 => Just(i32::MAX.to_string()),
        1 => Just(i32::MIN.to_string()),
        1 => Just("32768".to_string()),
        1 => Just("-32769".to_string()),
        1 => Just("99999999999".to_string()),
    ])
}

fn float() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![
        Just("0".to_string()),
        Just("0.5".to_string()),
        Just("1".to_string()),
        Just("1.5".to_string()),
        Just("-0.1".to_string()),
        Just("NaN".to_string()),
        Just("Infinity".to_string()),
    ])
}

fn timestamp() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![
        Just("now".to_string()),
        Just("infinity".to_string()),
        Just("-infinity".to_string()),
        Just("1970-01-01".to_string()),
        Just("294276-12-31".to_string()),
        Just("4713-01-01 BC".to_string()),
    ])
}

fn text() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![
        12 => "\\PC{0,40}",
        1 => Just(String::new()),
        1 => (500usize..530).prop_map(big),
        1 => (8000usize..9000).prop_map(big),
        1 => Just(big(10 << 20)),
    ])
}

fn texts() -> impl Strategy<Value = Option<Vec<Option<String>>>> {
    prop_oneof![1 => Just(None), 4 => proptest::collection::vec(text(), 0..6).prop_map(Some)]
}

/// Group keys (1 to 512 bytes): a few live groups, and the edges: empty, 512 bytes, 513, 512
/// characters of two bytes each, control characters, megabytes.
fn group_key() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        12 => Just(None),
        12 => some(&["g1", "g2", "g3", "tenant:42"]),
        1 => Just(Some(String::new())),
        1 => Just(Some("k".repeat(512))),
        1 => Just(Some("k".repeat(513))),
        1 => Just(Some("é".repeat(256))),
        1 => Just(Some("é".repeat(257))),
        1 => Just(Some(" ".to_string())),
        1 => "\\PC{1,20}".prop_map(Some),
        1 => (1usize..40).prop_map(|n| Some(format!("{}\u{0001}\t", "x".repeat(n)))),
        1 => (510usize..515).prop_map(|n| Some(big(n))),
        1 => Just(Some(big(1 << 20))),
    ]
}

/// A `group_keys` array: usually as long as the payloads (up to 7), NULL elements included.
fn group_keys() -> impl Strategy<Value = Option<Vec<Option<String>>>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(vec![])),
        8 => proptest::collection::vec(group_key(), 1..8).prop_map(Some),
        1 => (990usize..1010).prop_map(|n| Some(vec![Some("g1".to_string()); n])),
    ]
}

fn group_batch() -> impl Strategy<Value = Option<String>> {
    mostly(
        some(&["1", "1", "2", "4"]),
        opt(prop_oneof![
            Just("0".to_string()),
            Just("-1".to_string()),
            Just("1000".to_string()),
            Just("1001".to_string()),
            Just(i32::MAX.to_string()),
            Just(i32::MIN.to_string()),
        ]),
    )
}

/// `group_on_dead` and `group_order` values: the valid ones, and others.
fn group_setting(valid: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    mostly(
        proptest::sample::select(valid).prop_map(|v| Some(v.to_string())),
        opt(prop_oneof![
            Just(String::new()),
            Just("SKIP".to_string()),
            Just("fifo".to_string()),
            Just("skip ".to_string()),
            Just(big(600)),
        ]),
    )
}

fn boolean() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![Just("true".to_string()), Just("false".to_string())])
}

/// Receipts: placeholders resolved at run time from recent leases (R), or fixed values.
fn receipt() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![
        20 => Just("R".to_string()),
        1 => Just("00000000-0000-0000-0000-000000000000".to_string()),
        1 => Just("ffffffff-ffff-8fff-bfff-ffffffffffff".to_string()),
        1 => Just("00000000-0000-8000-8000-000000000001".to_string()),
        1 => Just("550e8400-e29b-41d4-a716-446655440000".to_string()),
        1 => Just("not a uuid".to_string()),
    ])
}

fn receipts() -> impl Strategy<Value = Option<Vec<Option<String>>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(vec![])),
        12 => proptest::collection::vec(receipt(), 1..6).prop_map(Some),
        1 => (995usize..1005).prop_map(|n| Some(vec![Some("R".to_string()); n])),
    ]
}

fn privilege() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![
        Just("enqueue".to_string()),
        Just("consume".to_string()),
        Just("manage".to_string()),
        Just("all".to_string()),
        Just("select".to_string()),
    ])
}

fn role() -> impl Strategy<Value = Option<String>> {
    opt(prop_oneof![
        Just("fz_nobody".to_string()),
        Just("public".to_string()),
        Just("postgres".to_string()),
        Just("no_such_role".to_string()),
        Just(String::new()),
        Just(big(100)),
    ])
}

/// Mostly a sensible value, sometimes anything: calls get past validation often enough to
/// exercise what lies behind it.
fn mostly<S, T>(usual: S, chaos: T) -> impl Strategy<Value = Option<String>>
where
    S: Strategy<Value = Option<String>> + 'static,
    T: Strategy<Value = Option<String>> + 'static,
{
    prop_oneof![6 => usual, 1 => chaos]
}

fn some(values: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    proptest::sample::select(values).prop_map(|v| Some(v.to_string()))
}

fn null() -> impl Strategy<Value = Option<String>> {
    Just(None)
}

fn live_queue() -> impl Strategy<Value = Option<String>> {
    mostly(some(&["fz_a", "fz_b", "fz_b"]), queue())
}

fn scratch_queue() -> impl Strategy<Value = Option<String>> {
    mostly(some(&["fz_tmp", "fz_tmp2"]), queue())
}

fn any_call() -> impl Strategy<Value = Call> {
    use Param::{Array as A, Text as T};
    let small_interval = || some(&["0", "0", "1 millisecond", "1 second"]);
    let calls = prop_oneof![
        6 => (live_queue(), mostly(json(), json()), mostly(null(), json()), mostly(small_interval(), interval()),
              mostly(some(&["0", "1", "-1", "5"]), int()), mostly(null(), timestamp()), mostly(null(), text()), group_key())
            .prop_map(|(q, p, h, d, pr, nb, k, g)| call(
            "SELECT courier.enqueue(?::text, ?::text::jsonb, ?::text::jsonb, ?::text::interval, ?::text::int, ?::text::timestamptz, ?::text, ?::text)",
            vec![T(q), T(p), T(h), T(d), T(pr), T(nb), T(k), T(g)])),
        3 => (live_queue(), json_array(), prop_oneof![4 => Just(None), 1 => json_array()], mostly(small_interval(), interval()),
              mostly(some(&["0", "2"]), int()), prop_oneof![4 => Just(None), 1 => texts()], group_keys(),
              prop::bool::weighted(0.7))
            .prop_map(|(q, p, h, d, pr, k, mut g, fit)| {
            // Mostly one key per payload, so that batches get past the shape check.
            if let (true, Some(p), Some(g)) = (fit, &p, &mut g) {
                g.resize(p.len(), None);
            }
            call(
            "SELECT * FROM courier.enqueue_batch(?::text, ?::text[]::jsonb[], ?::text[]::jsonb[], ?::text::interval, ?::text::int, NULL, ?::text[], ?::text[])",
            vec![T(q), A(p), A(h), T(d), T(pr), A(k), A(g)])
        }),
        2 => (live_queue(), json(), mostly(some(&["k1", "k2", "k3"]), text()), mostly(small_interval(), interval()), group_key())
            .prop_map(|(q, p, k, d, g)| call(
            "SELECT * FROM courier.enqueue_unique(?::text, ?::text::jsonb, ?::text, delay => ?::text::interval, group_key => ?::text)",
            vec![T(q), T(p), T(k), T(d), T(g)])),
        6 => (live_queue(), mostly(some(&["1", "3", "10", "100"]), int()), mostly(some(&["1 second", "30 seconds"]), interval()),
              mostly(some(&["0"]), wait()), group_batch())
            .prop_map(|(q, n, vt, w, gb)| call(
            "SELECT id, receipt::text, group_key FROM courier.lease(?::text, ?::text::int, ?::text::interval, ?::text::interval, ?::text::int)",
            vec![T(q), T(n), T(vt), T(w), T(gb)])),
        4 => (receipt(), mostly(some(&["false", "true"]), boolean())).prop_map(|(r, s)| call(
            "SELECT courier.ack(?::text::uuid, ?::text::boolean)", vec![T(r), T(s)])),
        2 => (receipts(), mostly(some(&["false", "true"]), boolean())).prop_map(|(r, s)| call(
            "SELECT courier.ack_batch(?::text[]::uuid[], ?::text::boolean)", vec![A(r), T(s)])),
        3 => (receipt(), mostly(some(&["0", "1 second"]), interval()), mostly(null(), text()),
              mostly(some(&["false", "false", "true"]), boolean()), mostly(some(&["false"]), boolean()))
            .prop_map(|(r, i, e, d, s)| call(
            "SELECT courier.nack(?::text::uuid, ?::text::interval, ?::text, ?::text::boolean, ?::text::boolean)",
            vec![T(r), T(i), T(e), T(d), T(s)])),
        2 => (receipts(), mostly(some(&["0"]), interval()), mostly(null(), text()), mostly(some(&["false", "true"]), boolean()))
            .prop_map(|(r, i, e, d)| call(
            "SELECT courier.nack_batch(?::text[]::uuid[], ?::text::interval, ?::text, ?::text::boolean)",
            vec![A(r), T(i), T(e), T(d)])),
        2 => (receipt(), mostly(some(&["30 seconds"]), interval()), mostly(some(&["false"]), boolean())).prop_map(|(r, i, s)| call(
            "SELECT courier.extend(?::text::uuid, ?::text::interval, ?::text::boolean)", vec![T(r), T(i), T(s)])),
        2 => (scratch_queue(), mostly(some(&["30 seconds"]), interval()), mostly(some(&["25", "0", "2"]), int()),
              mostly(null(), some(&["fz_dlq", "fz_a", "fz_tmp"])), mostly(some(&["1 second"]), interval()),
              mostly(some(&["15 minutes"]), interval()), mostly(some(&["0.2"]), float()),
              mostly(some(&["1 day"]), interval()), mostly(null(), interval()),
              (group_setting(&["skip", "block"]), group_setting(&["oldest", "fair"])))
            .prop_map(|(q, vt, ma, dlq, rb, rm, rj, dw, rt, (gd, go))| call(
            "SELECT courier.create_queue(?::text, ?::text::interval, ?::text::int, ?::text, ?::text::interval, \
             ?::text::interval, ?::text::float8, ?::text::interval, ?::text::interval, if_not_exists => true, \
             group_on_dead => ?::text, group_order => ?::text)",
            vec![T(q), T(vt), T(ma), T(dlq), T(rb), T(rm), T(rj), T(dw), T(rt), T(gd), T(go)])),
        2 => (prop_oneof![some(&["fz_b", "fz_tmp"]), queue()], mostly(null(), interval()), mostly(null(), int()),
              mostly(null(), some(&["fz_dlq", "", "fz_tmp2"])), mostly(null(), float()), mostly(null(), interval()),
              mostly(null(), boolean()),
              (prop_oneof![3 => Just(None), 1 => group_setting(&["skip", "block"])],
               prop_oneof![3 => Just(None), 1 => group_setting(&["oldest", "fair"])]))
            .prop_map(|(q, vt, ma, dlq, rj, rt, n, (gd, go))| call(
            "SELECT courier.alter_queue(?::text, visibility_timeout => ?::text::interval, max_attempts => ?::text::int, \
             dead_letter_queue => ?::text, retry_jitter => ?::text::float8, retention => ?::text::interval, notify => ?::text::boolean, \
             group_on_dead => ?::text, group_order => ?::text)",
            vec![T(q), T(vt), T(ma), T(dlq), T(rj), T(rt), T(n), T(gd), T(go)])),
        1 => scratch_queue().prop_map(|q| call("SELECT courier.purge_queue(?::text)", vec![T(q)])),
        1 => (scratch_queue(), boolean()).prop_map(|(q, e)| call(
            "SELECT courier.drop_queue(?::text, ?::text::boolean)", vec![T(q), T(e)])),
        1 => (prop_oneof![some(&["fz_dlq", "fz_a"]), queue()], prop_oneof![3 => Just(None), 1 => texts()], mostly(some(&["10"]), int()))
            .prop_map(|(q, ids, n)| call(
            "SELECT courier.redrive(?::text, ?::text[]::int8[], ?::text::int)", vec![T(q), A(ids), T(n)])),
        2 => live_queue().prop_map(|q| call("SELECT * FROM courier.stats(?::text)", vec![T(q)])),
        1 => live_queue().prop_map(|q| call("SELECT courier.stats_reset(?::text)", vec![T(q)])),
        1 => int().prop_map(|n| call("SELECT * FROM courier.maintain(?::text::int)", vec![T(n)])),
        1 => (live_queue(), privilege(), role()).prop_map(|(q, p, r)| call(
            "SELECT courier.grant(?::text, ?::text, ?::text)", vec![T(q), T(p), T(r)])),
        1 => (live_queue(), privilege(), role()).prop_map(|(q, p, r)| call(
            "SELECT courier.revoke(?::text, ?::text, ?::text)", vec![T(q), T(p), T(r)])),
        1 => (live_queue(), privilege()).prop_map(|(q, p)| call(
            "SELECT courier.has_queue_privilege(?::text, ?::text)", vec![T(q), T(p)])),
        1 => Just(call("SELECT count(*) FROM courier.queue_stats", vec![])),
        1 => Just(call("SELECT count(*), sum(ready), sum(in_flight), count(*) FILTER (WHERE blocked) FROM courier.queue_groups", vec![])),
    ];
    (calls, prop::bool::weighted(0.1)).prop_map(|(mut c, nobody)| {
        c.as_nobody = nobody;
        c
    })
}

pub async fn main(args: &Args) -> bool {
    let seed: u64 = args.get("seed", 1);
    let n: usize = args.get("calls", 3000);
    let port: u16 = args.get("port", 55433);
    let dir = std::path::PathBuf::from(
        args.str("dir").map(str::to_string).unwrap_or_else(|| format!("/tmp/courier-fuzz-{seed}")),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = Cluster::init(&dir.join("pg"), port, &[]);
    cluster.start();
    let admin = connect_retry(&cluster.conninfo("postgres", "postgres", "courier-fuzz")).await;
    admin.batch_execute(&format!("CREATE DATABASE {DB}")).await.expect("create database");
    let info = cluster.conninfo(DB, "postgres", "courier-fuzz");
    let mut c = connect_retry(&info).await;
    c.batch_execute(
        "CREATE EXTENSION courier;
         CREATE EXTENSION amcheck;
         SELECT courier.create_queue('fz_dlq');
         SELECT courier.create_queue('fz_a', visibility_timeout => '1 second', max_attempts => 3,
                                     dead_letter_queue => 'fz_dlq');
         SELECT courier.create_queue('fz_b', retention => '1 hour', notify => true, group_on_dead => 'block',
                                     group_order => 'fair');
         SELECT courier.create_queue('fz_tmp2');
         CREATE ROLE fz_nobody;
         GRANT USAGE ON SCHEMA courier TO fz_nobody;",
    )
    .await
    .expect("set up the database");

    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let calls =
        proptest::collection::vec(any_call(), n).new_tree(&mut runner).expect("generate calls").current();

    println!("courier-fault fuzz: seed {seed}, {n} calls");
    let started = Instant::now();
    let mut receipts: Vec<String> = Vec::new();
    let mut pick = 0usize;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut findings: Vec<String> = Vec::new();
    let mut per_function: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut grouped_rows = 0usize;
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    for (i, call) in calls.iter().enumerate() {
        // Receipt placeholders become receipts from recent leases (valid, stale or acked).
        let params: Vec<Param> = call
            .params
            .iter()
            .map(|p| {
                let mut resolve = |s: &Option<String>| match s.as_deref() {
                    Some("R") if !receipts.is_empty() => {
                        pick = pick.wrapping_mul(31).wrapping_add(7);
                        Some(receipts[pick % receipts.len()].clone())
                    }
                    Some("R") => Some("00000000-0000-8000-8000-000000000001".to_string()),
                    _ => s.clone(),
                };
                match p {
                    Param::Text(s) => Param::Text(resolve(s)),
                    Param::Array(a) => Param::Array(a.as_ref().map(|v| v.iter().map(&mut resolve).collect())),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| match p {
                Param::Text(s) => s as &(dyn ToSql + Sync),
                Param::Array(a) => a as &(dyn ToSql + Sync),
            })
            .collect();
        if call.as_nobody {
            let _ = c.batch_execute("SET ROLE fz_nobody").await;
        }
        let result = tokio::time::timeout(Duration::from_secs(60), c.query(call.sql.as_str(), &refs)).await;
        if call.as_nobody {
            let _ = c.batch_execute("RESET ROLE").await;
        }
        let key = match result {
            Err(_) => {
                findings.push(format!("call {i} did not return within 60 s: {}", call.sql));
                c = connect_retry(&info).await;
                "timeout".to_string()
            }
            Ok(Ok(rows)) => {
                if call.sql.contains("courier.lease(") {
                    for r in &rows {
                        receipts.push(r.get::<_, String>(1));
                        grouped_rows += usize::from(r.get::<_, Option<String>>(2).is_some());
                    }
                    if receipts.len() > 200 {
                        receipts.drain(..100);
                    }
                }
                "ok".to_string()
            }
            Ok(Err(e)) => match e.as_db_error() {
                Some(db) => {
                    let code = db.code().code().to_string();
                    if code == "XX000" || db.message().contains("panicked") {
                        findings.push(format!(
                            "call {i}: internal error {code} {}: {}",
                            db.message(),
                            call.sql
                        ));
                    }
                    code
                }
                None => {
                    findings.push(format!("call {i} lost the connection ({e}): {}", call.sql));
                    c = connect_retry(&info).await;
                    "connection lost".to_string()
                }
            },
        };
        let function = call.sql.split("courier.").nth(1).and_then(|f| f.split('(').next()).unwrap_or("?");
        let e = per_function.entry(function.to_string()).or_insert((0, 0));
        if key == "ok" {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
        if args.str("verbose").is_some() && key != "ok" {
            examples.entry(key.clone()).or_insert_with(|| call.sql.clone());
        }
        *outcomes.entry(key).or_default() += 1;
    }
    if args.str("inject-crash").is_some() {
        // Proves the detectors work: a backend that dies of SIGSEGV must fail the run.
        if let Ok(row) = c.query_one("SELECT pg_backend_pid()", &[]).await {
            let pid: i32 = row.get(0);
            // SAFETY: signalling a server process of our own throwaway cluster.
            unsafe { libc::kill(pid, libc::SIGSEGV) };
            if c.query("SELECT 1", &[]).await.is_err() {
                findings.push("the connection was lost (crash injected on purpose)".into());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    // Still alive and consistent after all that?
    if connect(&info).await.is_none() {
        findings.push("the server does not accept connections after the run".into());
    }
    if let Err(e) = cluster.amcheck(DB) {
        findings.push(e);
    }
    cluster.stop("fast");
    findings.extend(cluster.crash_lines().into_iter().map(|l| format!("server log: {l}")));
    let summary: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("{} calls in {:.1} s: {}", calls.len(), started.elapsed().as_secs_f64(), summary.join(", "));
    let per: Vec<String> =
        per_function.iter().map(|(f, (ok, err))| format!("{f} {ok}/{}", ok + err)).collect();
    println!("succeeded per function: {}", per.join(", "));
    println!("messages leased with a group key: {grouped_rows}");
    for (code, sql) in &examples {
        println!("  e.g. {code}: {sql}");
    }
    for f in findings.iter().take(20) {
        println!("  finding: {}", f.chars().take(300).collect::<String>());
    }
    let ok = findings.is_empty();
    println!("result: {}", if ok { "PASS" } else { "FAIL" });
    if ok {
        cluster.destroy();
    } else {
        println!("cluster kept in {}", dir.display());
    }
    ok
}
