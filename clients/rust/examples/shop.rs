//! A web shop's order endpoint (axum): the order and the job that emails its confirmation are
//! written in one transaction, so there is never an order without its email or an email for an
//! order that does not exist. `email_worker` sends the emails.
//!
//!   DATABASE_URL="host=/var/run/postgresql dbname=shop" LISTEN=127.0.0.1:3000 cargo run --example shop
//!   curl -d '{"email": "ada@example.com", "total_cents": 4200}' -H 'content-type: application/json' localhost:3000/orders

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use courier_client::deadpool_postgres::{Manager, Pool};
use courier_client::tokio_postgres::NoTls;
use courier_client::{EnqueueOptions, QueueSettings, create_queue_if_not_exists, enqueue};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct NewOrder {
    email: String,
    total_cents: i64,
}

/// The email job's payload (what `email_worker` reads).
#[derive(Serialize)]
struct OrderEmail<'a> {
    order_id: i64,
    to: &'a str,
}

async fn place_order(State(pool): State<Pool>, Json(order): Json<NewOrder>) -> (StatusCode, String) {
    match place(&pool, &order).await {
        Ok(id) => (StatusCode::CREATED, format!("order {id}\n")),
        // The shop's CHECK constraint refused it: the transaction, email job included, rolled back.
        Err(e) if e.code() == Some("23514") => (StatusCode::UNPROCESSABLE_ENTITY, "invalid order\n".into()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn place(pool: &Pool, order: &NewOrder) -> Result<i64, courier_client::Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let id: i64 = tx.query_one("SELECT nextval('shop.orders_id_seq')", &[]).await?.get(0);
    // The email job first, the order second: if the order is refused, the job goes with it.
    enqueue(&tx, "emails", &OrderEmail { order_id: id, to: &order.email }, &EnqueueOptions::default())
        .await?;
    tx.execute(
        "INSERT INTO shop.orders (id, email, total_cents) VALUES ($1, $2, $3)",
        &[&id, &order.email, &order.total_cents],
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let config: courier_client::tokio_postgres::Config = std::env::var("DATABASE_URL")?.parse()?;
    let pool = Pool::builder(Manager::new(config, NoTls)).max_size(8).build()?;
    {
        let client = pool.get().await?;
        client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS shop;
                 CREATE TABLE IF NOT EXISTS shop.orders (
                     id bigserial PRIMARY KEY,
                     email text NOT NULL CHECK (email LIKE '%_@_%'),
                     total_cents int8 NOT NULL CHECK (total_cents > 0),
                     created_at timestamptz NOT NULL DEFAULT now(),
                     email_sent_at timestamptz)",
            )
            .await?;
        create_queue_if_not_exists(&**client, "emails", &QueueSettings::default().max_attempts(10)).await?;
    }
    let app = Router::new().route("/orders", post(place_order)).with_state(pool);
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, "shop listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a signal handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    Ok(())
}
