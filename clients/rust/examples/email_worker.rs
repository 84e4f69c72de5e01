//! Sends the order emails `shop` enqueues, exactly once as far as the database is concerned:
//! the order is marked sent in the transaction that acks its job, so a worker that crashes,
//! loses its lease or its connection never leaves an email marked sent without its ack, or
//! acked without the mark. (The send itself is outside the database: a real sender passes the
//! order id to its email provider as an idempotency key.)
//!
//!   DATABASE_URL="host=/var/run/postgresql dbname=shop" cargo run --example email_worker

use std::time::Duration;

use courier_client::deadpool_postgres::{Manager, Pool};
use courier_client::tokio_postgres::NoTls;
use courier_client::{HandlerError, Job, Worker};
use serde::Deserialize;

#[derive(Deserialize)]
struct OrderEmail {
    order_id: i64,
    to: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let config: courier_client::tokio_postgres::Config = std::env::var("DATABASE_URL")?.parse()?;
    let pool = Pool::builder(Manager::new(config, NoTls)).max_size(3).build()?;
    let worker = Worker::<OrderEmail>::builder(pool, "emails")
        .concurrency(2)
        .visibility_timeout(Duration::from_secs(30))
        .handler_timeout(Duration::from_secs(10))
        .build_exactly_once(|tx, job: Job<OrderEmail>| {
            Box::pin(async move {
                let email = job.payload();
                let marked = tx
                    .execute(
                        "UPDATE shop.orders SET email_sent_at = now() WHERE id = $1 AND email_sent_at IS NULL",
                        &[&email.order_id],
                    )
                    .await?;
                if marked == 0 {
                    return Err(HandlerError::poison(format!("order {} does not exist or was sent", email.order_id)));
                }
                // Stands in for the email provider's API call.
                println!("sent order {} to {}", email.order_id, email.to);
                Ok(())
            })
        })?;
    let metrics = worker.metrics();
    worker.run().await?; // until SIGTERM or SIGINT
    eprintln!("{:?}", metrics.snapshot());
    Ok(())
}
