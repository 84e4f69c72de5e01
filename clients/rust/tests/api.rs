//! Every typed call against a live courier (the database in `COURIER_TEST_URL`, which
//! `clients/rust/test.sh` sets), and every courier SQLSTATE as its `Error` variant.

use std::time::{Duration, SystemTime};

use courier_client::tokio_postgres::{self, Client, NoTls};
use courier_client::*;
use serde_json::json;

async fn connect() -> Client {
    let url =
        std::env::var("COURIER_TEST_URL").expect("COURIER_TEST_URL is not set: run clients/rust/test.sh");
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// A queue of its own for each test, created fresh.
async fn fresh(db: &Client, name: &str, settings: QueueSettings) {
    drop_queue_if_exists(db, &format!("{name}.dead")).await.ok();
    let _ = drop_queue_if_exists(db, name).await.expect("drop");
    create_queue(db, name, &settings).await.expect("create");
}

#[tokio::test]
async fn queues_are_created_altered_listed_purged_and_dropped() {
    let db = connect().await;
    let q = "api.queues";
    fresh(&db, q, QueueSettings::default().visibility_timeout(Duration::from_secs(90)).max_attempts(4)).await;
    assert!(!create_queue_if_not_exists(&db, q, &QueueSettings::default()).await.unwrap());
    let info = queue(&db, q).await.unwrap().expect("listed");
    assert_eq!(
        (info.visibility_timeout, info.max_attempts, info.retention),
        (Duration::from_secs(90), 4, None)
    );
    alter_queue(&db, q, &QueueSettings::default().retention(Duration::from_secs(3600)).notify(true))
        .await
        .unwrap();
    let info = queue(&db, q).await.unwrap().unwrap();
    assert_eq!((info.retention, info.notify, info.max_attempts), (Some(Duration::from_secs(3600)), true, 4));
    assert!(queues(&db).await.unwrap().iter().any(|i| i.queue == q));
    enqueue_batch(&db, q, &[json!(1), json!(2), json!(3)], &BatchOptions::default()).await.unwrap();
    assert_eq!(purge_queue(&db, q).await.unwrap(), 3);
    drop_queue(&db, q).await.unwrap();
    assert!(queue(&db, q).await.unwrap().is_none());
    assert!(!drop_queue_if_exists(&db, q).await.unwrap());
}

#[tokio::test]
async fn enqueue_options_and_dedup() {
    let db = connect().await;
    let q = "api.enqueue";
    fresh(&db, q, QueueSettings::default()).await;
    let opts = EnqueueOptions::default().headers(json!({"trace": "a1"})).priority(7).dedup_key("k1");
    let id = enqueue(&db, q, &json!({"x": 1}), &opts).await.unwrap();
    assert_eq!(
        enqueue(&db, q, &json!({"x": 2}), &opts).await.unwrap(),
        id,
        "a taken key returns the first id"
    );
    let u = enqueue_unique(&db, q, &json!({"x": 3}), "k1", &EnqueueOptions::default()).await.unwrap();
    assert_eq!(u, Enqueued { id, duplicate: true });
    let u2 = enqueue_unique(&db, q, &json!({"x": 4}), "k2", &EnqueueOptions::default()).await.unwrap();
    assert!(!u2.duplicate && u2.id != id);
    enqueue(&db, q, &json!("later"), &EnqueueOptions::default().delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    let at = SystemTime::now() + Duration::from_secs(7200);
    enqueue(&db, q, &json!("scheduled"), &EnqueueOptions::default().not_before(at)).await.unwrap();
    let batch = BatchOptions {
        headers: Some(vec![Some(json!({"h": 1})), None]),
        dedup_keys: Some(vec![Some("b1".into()), Some("b1".into())]),
        priority: Some(-1),
        ..Default::default()
    };
    let r = enqueue_batch(&db, q, &[json!("b"), json!("c")], &batch).await.unwrap();
    assert_eq!((r.len(), r[0].duplicate, r[1].duplicate, r[1].id), (2, false, true, r[0].id));
    let s = stats(&db, q).await.unwrap();
    assert_eq!((s.ready, s.delayed, s.enqueued_total, s.deduplicated_total), (3, 2, Some(5), Some(3)));
    // Highest priority first, with its headers.
    let m = lease(&db, q, &LeaseOptions::default().batch_size(10)).await.unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!((m[0].id, m[0].priority, m[0].headers.clone()), (id, 7, Some(json!({"trace": "a1"}))));
    assert_eq!(m[2].payload, json!("b"));
    assert_eq!(m[2].headers, Some(json!({"h": 1})));
    assert_eq!(ack_batch(&db, &m.iter().map(|m| m.receipt).collect::<Vec<_>>()).await.unwrap(), 3);
}

#[tokio::test]
async fn lease_ack_nack_extend_and_strict_forms() {
    let db = connect().await;
    let q = "api.consume";
    fresh(&db, q, QueueSettings::default().retry_base(Duration::from_millis(100))).await;
    enqueue_batch(&db, q, &[json!({"n": 1}), json!({"n": 2}), json!({"n": 3})], &BatchOptions::default())
        .await
        .unwrap();
    let vt = Duration::from_secs(60);
    let m = lease(&db, q, &LeaseOptions::default().batch_size(3).visibility_timeout(vt)).await.unwrap();
    assert_eq!(m.len(), 3);
    assert!(m.iter().all(|m| m.attempt == 1 && m.last_error.is_none()));
    let until = m[0].lease_expires_at.duration_since(SystemTime::now()).unwrap();
    assert!(until > Duration::from_secs(55) && until <= vt, "lease for {until:?}");
    #[derive(serde::Deserialize)]
    struct N {
        n: i32,
    }
    assert_eq!(m[1].payload_as::<N>().unwrap().n, 2);
    assert!(m[1].clone().decode::<String>().is_err());

    assert!(extend(&db, m[0].receipt, Duration::from_secs(120)).await.unwrap());
    extend_strict(&db, m[0].receipt, Duration::from_secs(120)).await.unwrap();
    assert!(ack(&db, m[0].receipt).await.unwrap());
    assert!(!ack(&db, m[0].receipt).await.unwrap(), "a used receipt does nothing");
    assert!(!extend(&db, m[0].receipt, vt).await.unwrap());
    assert!(matches!(ack_strict(&db, m[0].receipt).await, Err(Error::LeaseLost(e)) if e.code == "QC001"));
    assert!(matches!(extend_strict(&db, m[0].receipt, vt).await, Err(Error::LeaseLost(_))));
    assert!(matches!(
        nack_strict(&db, m[0].receipt, &NackOptions::default()).await,
        Err(Error::LeaseLost(_))
    ));
    assert!(matches!(ack_batch_strict(&db, &[m[0].receipt, m[1].receipt]).await, Err(Error::LeaseLost(_))));
    assert!(matches!(
        nack_batch_strict(&db, &[m[0].receipt], &NackOptions::default()).await,
        Err(Error::LeaseLost(_))
    ));

    // nack with an error and retry_in 0: back at once, attempt 2, the error shown.
    assert!(
        nack(&db, m[1].receipt, &NackOptions::retry_in(Duration::ZERO).with_error("smtp 451")).await.unwrap()
    );
    nack_strict(&db, m[2].receipt, &NackOptions::dead("bad address")).await.unwrap();
    let again = lease(&db, q, &LeaseOptions::default().wait(Duration::from_secs(2))).await.unwrap();
    assert_eq!((again.len(), again[0].id, again[0].attempt), (1, m[1].id, 2));
    assert_eq!(again[0].last_error.as_deref(), Some("smtp 451"));
    assert_eq!(nack_batch(&db, &[again[0].receipt], &NackOptions::error("again")).await.unwrap(), 1);
    let third = lease(&db, q, &LeaseOptions::default().wait(Duration::from_secs(3))).await.unwrap();
    assert_eq!(third[0].attempt, 3);
    ack_batch_strict(&db, &[third[0].receipt]).await.unwrap();

    // The dead one: listed, redriven, leased again from attempt 0.
    let dead = dead_letters(&db, Some(q)).await.unwrap();
    assert_eq!((dead.len(), dead[0].id, dead[0].last_error.as_deref()), (1, m[2].id, Some("bad address")));
    let opts = RedriveOptions { message_ids: Some(vec![m[2].id]), max_messages: Some(10) };
    assert_eq!(redrive(&db, q, &opts).await.unwrap(), 1);
    let back = lease(&db, q, &LeaseOptions::default()).await.unwrap();
    assert_eq!((back[0].id, back[0].attempt), (m[2].id, 1));
    ack_strict(&db, back[0].receipt).await.unwrap();
    assert_eq!(stats(&db, q).await.unwrap().acked_total, Some(3));
}

#[tokio::test]
async fn calls_join_the_callers_transaction() {
    let mut db = connect().await;
    let q = "api.tx";
    fresh(&db, q, QueueSettings::default()).await;
    let tx = db.transaction().await.unwrap();
    enqueue(&tx, q, &json!("rolled back"), &EnqueueOptions::default()).await.unwrap();
    tx.rollback().await.unwrap();
    let tx = db.transaction().await.unwrap();
    enqueue(&tx, q, &json!("committed"), &EnqueueOptions::default()).await.unwrap();
    tx.commit().await.unwrap();
    // A deadpool client and transaction work the same (with prepared statements).
    let pool =
        courier_client::deadpool_postgres::Pool::builder(courier_client::deadpool_postgres::Manager::new(
            std::env::var("COURIER_TEST_URL").unwrap().parse().unwrap(),
            NoTls,
        ))
        .max_size(1)
        .build()
        .unwrap();
    let mut c = pool.get().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let m = lease(&tx, q, &LeaseOptions::default().batch_size(5)).await.unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].payload, json!("committed"));
    ack_strict(&tx, m[0].receipt).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stats(&*c, q).await.unwrap().ready, 0);
}

#[tokio::test]
async fn monitoring_and_privileges() {
    let db = connect().await;
    let q = "api.mon";
    fresh(&db, q, QueueSettings::default().retention(Duration::from_secs(3600))).await;
    enqueue(&db, q, &json!({"done": true}), &EnqueueOptions::default()).await.unwrap();
    let m = lease(&db, q, &LeaseOptions::default()).await.unwrap();
    ack(&db, m[0].receipt).await.unwrap();
    let done = completed_messages(&db, Some(q)).await.unwrap();
    assert_eq!((done.len(), done[0].id, done[0].attempt), (1, m[0].id, 1));
    // Other tests drop and create their queues meanwhile: courier.queue_stats reads in one
    // snapshot, so a queue dropped during the read does not make it fail.
    assert!(all_stats(&db).await.unwrap().iter().any(|s| s.queue == q));
    assert!(stats_reset(&db, Some(q)).await.unwrap());
    assert_eq!(stats(&db, q).await.unwrap().acked_total, Some(0));
    let _ = maintain(&db, 1000).await.unwrap();
    assert!(!version(&db).await.unwrap().is_empty());

    // GRANT and DROP OWNED rewrite the schema's catalog row without locking it: two tests doing
    // so at once fail with "tuple concurrently updated". Each batch is one implicit transaction,
    // so the advisory lock serializes them until it ends.
    db.batch_execute(
        "SELECT pg_advisory_xact_lock(7301);
         DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'api_worker') THEN
             DROP OWNED BY api_worker; DROP ROLE api_worker; END IF; END $$;
         CREATE ROLE api_worker; GRANT USAGE ON SCHEMA courier TO api_worker",
    )
    .await
    .unwrap();
    grant(&db, q, Privilege::Consume, "api_worker").await.unwrap();
    db.batch_execute("SET ROLE api_worker").await.unwrap();
    assert!(has_queue_privilege(&db, q, Privilege::Consume).await.unwrap());
    assert!(!has_queue_privilege(&db, q, Privilege::Enqueue).await.unwrap());
    let denied = enqueue(&db, q, &json!(1), &EnqueueOptions::default()).await;
    assert!(matches!(denied, Err(Error::PermissionDenied(ref e)) if e.code == "42501"), "{denied:?}");
    db.batch_execute("RESET ROLE").await.unwrap();
    revoke(&db, q, Privilege::All, "api_worker").await.unwrap();
    drop_queue(&db, q).await.unwrap();
    db.batch_execute("SELECT pg_advisory_xact_lock(7301); DROP OWNED BY api_worker; DROP ROLE api_worker")
        .await
        .unwrap();
}

/// Every SQLSTATE of the README's "Errors" table, raised by courier, comes back as its variant.
#[tokio::test]
async fn each_sqlstate_is_a_typed_error() {
    let mut db = connect().await;
    let q = "api.errors";
    fresh(&db, q, QueueSettings::default()).await;
    let e = lease(&db, q, &LeaseOptions::default().batch_size(0)).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(s) if s.message == "batch_size must be between 1 and 1000, not 0"),
        "{e}"
    );
    let e = create_queue(&db, "bad name!", &QueueSettings::default()).await.unwrap_err();
    assert!(matches!(e, Error::InvalidName(ref s) if s.code == "42602"), "{e}");
    let e = create_queue(&db, &"x".repeat(64), &QueueSettings::default()).await.unwrap_err();
    assert!(matches!(e, Error::InvalidName(ref s) if s.code == "42622"), "{e}");
    let e = stats(&db, "api.missing").await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    let e = create_queue(&db, q, &QueueSettings::default()).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    let e = enqueue(&db, q, &"x".repeat(1_100_000), &EnqueueOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge(_)), "{e}");
    create_queue(&db, "api.errors.dead", &QueueSettings::default()).await.unwrap();
    alter_queue(&db, q, &QueueSettings::default().dead_letter_queue("api.errors.dead")).await.unwrap();
    let e = drop_queue(&db, "api.errors.dead").await.unwrap_err();
    assert!(matches!(e, Error::DependentObjects(_)), "{e}");
    alter_queue(&db, q, &QueueSettings::default().dead_letter_queue("")).await.unwrap();
    {
        let tx = db
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .unwrap();
        let e = lease(&tx, q, &LeaseOptions::default().wait(Duration::from_millis(100))).await.unwrap_err();
        assert!(matches!(e, Error::InvalidTransactionState(_)), "{e}");
    }
    {
        let tx = db.transaction().await.unwrap();
        tx.batch_execute("SET LOCAL statement_timeout = 200").await.unwrap();
        let e = lease(&tx, q, &LeaseOptions::default().wait(Duration::from_secs(5))).await.unwrap_err();
        assert!(matches!(e, Error::Cancelled(ref s) if s.code == "57014"), "{e}");
    }
    // What the typed calls cannot send (a NULL argument, a receipt that is not a UUID) and
    // the race that raises 40001, raised by courier's own functions or by hand.
    let raw = |sql: &'static str| {
        let db = &db;
        async move { Error::from(db.query(sql, &[]).await.unwrap_err()) }
    };
    let e = raw("SELECT courier.enqueue('api.errors', NULL)").await;
    assert!(matches!(e, Error::NullArgument(_)), "{e}");
    let e = raw("SELECT courier.ack('not a uuid')").await;
    assert!(matches!(e, Error::InvalidText(_)), "{e}");
    let e = raw("DO $$ BEGIN RAISE EXCEPTION 'could not serialize' USING ERRCODE = '40001'; END $$").await;
    assert!(matches!(e, Error::SerializationFailure(_)), "{e}");
    let e = raw("SELECT 1/0").await;
    assert!(matches!(e, Error::Database(_)) && e.code() == Some("22012"), "{e}");
    // A payload that does not serialize is refused before anything is sent.
    let bad: std::collections::HashMap<(i32, i32), i32> = [((1, 2), 3)].into();
    assert!(matches!(enqueue(&db, q, &bad, &EnqueueOptions::default()).await, Err(Error::Json(_))));
    drop_queue(&db, q).await.unwrap();
    drop_queue(&db, "api.errors.dead").await.unwrap();
}

fn pool(size: usize) -> courier_client::deadpool_postgres::Pool {
    let url =
        std::env::var("COURIER_TEST_URL").expect("COURIER_TEST_URL is not set: run clients/rust/test.sh");
    courier_client::deadpool_postgres::Pool::builder(courier_client::deadpool_postgres::Manager::new(
        url.parse().unwrap(),
        NoTls,
    ))
    .max_size(size)
    .build()
    .unwrap()
}

/// Configurations that cannot work are refused when the worker is built; a queue that does
/// not exist, or that the role may not consume from, when it starts.
#[tokio::test]
async fn worker_refuses_bad_configuration() {
    let handler = |_job: Job<serde_json::Value>| async { Ok(()) };
    let refused = |b: WorkerBuilder<serde_json::Value>| match b.build(handler) {
        Err(Error::Config(m)) => m,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("built"),
    };
    assert!(refused(Worker::builder(pool(9), "")).contains("must not be empty"));
    assert!(refused(Worker::builder(pool(9), "q").concurrency(0)).contains("concurrency"));
    assert!(refused(Worker::builder(pool(9), "q").batch_size(1001)).contains("batch_size"));
    assert!(refused(Worker::builder(pool(4), "q").concurrency(4)).contains("needs 5"));
    let m = refused(
        Worker::builder(pool(9), "q")
            .heartbeat(false)
            .visibility_timeout(Duration::from_secs(5))
            .handler_timeout(Duration::from_secs(5)),
    );
    assert!(m.contains("must be below visibility_timeout"), "{m}");
    // With the heartbeat on, the lease is kept while the handler runs.
    let w = Worker::builder(pool(9), "q")
        .visibility_timeout(Duration::from_secs(3))
        .handler_timeout(Duration::from_secs(15))
        .build(handler);
    assert!(w.is_ok());

    let missing = Worker::builder(pool(9), "api.no-such-queue").handle_signals(false).build(handler).unwrap();
    let e = missing.run().await.unwrap_err();
    assert!(matches!(e, Error::NotFound(ref s) if s.message.contains("api.no-such-queue")), "{e}");

    let db = connect().await;
    fresh(&db, "api.worker", QueueSettings::default()).await;
    db.batch_execute(
        "SELECT pg_advisory_xact_lock(7301);
         DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'api_outsider') THEN
             CREATE ROLE api_outsider; GRANT USAGE ON SCHEMA courier TO api_outsider; END IF; END $$",
    )
    .await
    .unwrap();
    let mut config: tokio_postgres::Config = std::env::var("COURIER_TEST_URL").unwrap().parse().unwrap();
    config.options("-c role=api_outsider");
    let outsider = courier_client::deadpool_postgres::Pool::builder(
        courier_client::deadpool_postgres::Manager::new(config, NoTls),
    )
    .max_size(3)
    .build()
    .unwrap();
    let w =
        Worker::builder(outsider, "api.worker").concurrency(2).handle_signals(false).build(handler).unwrap();
    let e = w.run().await.unwrap_err();
    assert!(matches!(e, Error::Config(ref m) if m.contains("may not consume")), "{e}");
}

/// Message groups: keys on every enqueue form, settings, the lease's group_key and
/// group_batch, queue_groups, dead letters blocking their group.
#[tokio::test]
async fn message_groups() {
    let db = connect().await;
    let q = "api.groups";
    fresh(&db, q, QueueSettings::default().group_on_dead(GroupOnDead::Block).group_order(GroupOrder::Fair))
        .await;
    let info = queue(&db, q).await.unwrap().unwrap();
    assert_eq!((info.group_on_dead.as_str(), info.group_order.as_str()), ("block", "fair"));
    alter_queue(&db, q, &QueueSettings::default().group_order(GroupOrder::Oldest)).await.unwrap();
    assert_eq!(queue(&db, q).await.unwrap().unwrap().group_order, "oldest");

    let a1 = enqueue(&db, q, &json!("a1"), &EnqueueOptions::default().group_key("A")).await.unwrap();
    let a2 = enqueue_unique(&db, q, &json!("a2"), "k-a2", &EnqueueOptions::default().group_key("A"))
        .await
        .unwrap();
    let batch = BatchOptions {
        group_keys: Some(vec![Some("A".into()), Some("B".into()), None]),
        ..Default::default()
    };
    enqueue_batch(&db, q, &[json!("a3"), json!("b1"), json!("u1")], &batch).await.unwrap();
    let s = stats(&db, q).await.unwrap();
    assert_eq!((s.groups, s.groups_held, s.groups_blocked), (2, 0, 0));

    // group_batch 2: A's first two, in order; then B and the ungrouped one; A3 waits for its group.
    let m = lease(&db, q, &LeaseOptions::default().batch_size(10).group_batch(2)).await.unwrap();
    let got: Vec<(serde_json::Value, Option<String>)> =
        m.iter().map(|m| (m.payload.clone(), m.group_key.clone())).collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!((m[0].id, m[1].id), (a1, a2.id));
    assert!(got.contains(&(json!("b1"), Some("B".into()))) && got.contains(&(json!("u1"), None)), "{got:?}");
    let groups = queue_groups(&db, Some(q)).await.unwrap();
    assert_eq!(
        groups.iter().map(|g| (g.group_key.as_str(), g.in_flight)).collect::<Vec<_>>(),
        [("A", 2), ("B", 1)]
    );
    assert!(
        lease(&db, q, &LeaseOptions::default().batch_size(10)).await.unwrap().is_empty(),
        "A3 leased while A is held"
    );

    // A1 acked, A2 dead: with group_on_dead 'block', A3 waits until the dead letter is redriven.
    assert!(ack(&db, m[0].receipt).await.unwrap());
    assert!(nack(&db, m[1].receipt, &NackOptions::dead("poison")).await.unwrap());
    let rest: Vec<Receipt> = m[2..].iter().map(|m| m.receipt).collect();
    assert_eq!(ack_batch(&db, &rest).await.unwrap(), 2);
    let dead = dead_letters(&db, Some(q)).await.unwrap();
    assert_eq!((dead[0].id, dead[0].group_key.as_deref()), (a2.id, Some("A")));
    assert_eq!(stats(&db, q).await.unwrap().groups_blocked, 1);
    assert!(queue_groups(&db, Some(q)).await.unwrap()[0].blocked);
    assert!(lease(&db, q, &LeaseOptions::default()).await.unwrap().is_empty(), "a blocked group delivered");
    assert_eq!(redrive(&db, q, &RedriveOptions::default()).await.unwrap(), 1);
    let again = lease(&db, q, &LeaseOptions::default().batch_size(10).group_batch(5)).await.unwrap();
    assert_eq!(again.iter().map(|m| m.payload.clone()).collect::<Vec<_>>(), [json!("a2"), json!("a3")]);
    assert_eq!(ack_batch(&db, &again.iter().map(|m| m.receipt).collect::<Vec<_>>()).await.unwrap(), 2);
    let e = lease(&db, q, &LeaseOptions::default().group_batch(0)).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    drop_queue(&db, q).await.unwrap();
}
