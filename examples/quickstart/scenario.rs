//! The quickstart's scenario, shared by the example (`cargo run --release --example
//! quickstart`) and its test (`tests/quickstart.rs`, at a smaller scale): two testkit servers, a
//! realistic dataset, a writer that keeps changing it, and a migration run through the library
//! code the `mongoshift` CLI runs (`plan`, `apply`, `cutover`).

#![allow(
    dead_code,
    reason = "shared by the example and its test, which use different parts"
)]

use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Decimal128, Document, doc, oid::ObjectId};
use mongodb::Client;
use mongoshift::config;
use mongoshift::plan::{self, render};
use mongoshift::state::{Phase, lockfile};
use mongoshift::sync::progress::{Rate, summary_line};
use mongoshift::sync::{self, ApplyError, ApplyOutcome, ApplyRequest, Progress};
use mongoshift_testkit::{TestServer, TestServerHandle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Any failure of the scenario itself (the migration's own outcome is in [`Finished`]).
pub type BoxError = Box<dyn Error + Send + Sync>;

/// How much data to seed.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// `shop.customers` (ObjectId `_id`s, unique e-mail index).
    pub customers: i64,
    /// `shop.products` (string `_id`s, Decimal128 prices).
    pub products: i64,
    /// `shop.orders` (integer `_id`s, nested line items, compound and partial indexes).
    pub orders: i64,
    /// `analytics.events` (a capped collection).
    pub events: i64,
    /// `analytics.sessions` (UUID `_id`s, a TTL index).
    pub sessions: i64,
    /// How long to keep syncing once ready before approving the cutover, so the change
    /// application can be watched.
    pub linger: Duration,
}

impl Scale {
    /// The quickstart's size: 125,000 documents.
    pub const FULL: Scale = Scale {
        customers: 20_000,
        products: 5_000,
        orders: 80_000,
        events: 15_000,
        sessions: 5_000,
        linger: Duration::from_secs(5),
    };

    /// A few thousand documents, for the test.
    pub const SMALL: Scale = Scale {
        customers: 500,
        products: 200,
        orders: 2_000,
        events: 500,
        sessions: 200,
        linger: Duration::from_millis(500),
    };

    fn total(&self) -> i64 {
        self.customers + self.products + self.orders + self.events + self.sessions
    }
}

/// What the writer did before it stopped.
#[derive(Debug, Default)]
pub struct WriterTally {
    /// Inserts, updates, replaces and deletes that changed a document.
    pub writes: u64,
    /// The error that stopped it (the cutover's write block, normally).
    pub stopped_by: Option<String>,
}

/// How the scenario ended.
#[derive(Debug)]
pub struct Finished {
    /// The migration's outcome, as `mongoshift apply` returns it.
    pub outcome: Result<ApplyOutcome, ApplyError>,
    /// The writer's work.
    pub writer: WriterTally,
    /// The plan, as `mongoshift plan` prints it.
    pub plan: String,
    /// Documents seeded.
    pub seeded: i64,
}

/// Runs the scenario in `dir` (which holds `migration.toml`, the lockfile and the report
/// afterwards). `say` receives each line of narration.
pub async fn run(
    dir: &Path,
    scale: Scale,
    cancel: CancellationToken,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Finished, BoxError> {
    say("Starting two testkit servers (in-process MongoDB 7.0 replica sets)...");
    // An oplog that holds a million entries, so that (as on a real cluster, whose oplog is
    // gigabytes) seeding does not fill it.
    let source = TestServer::builder()
        .replica_set_name("source")
        .oplog_max_events(1_000_000)
        .start()
        .await?;
    let destination = TestServer::builder()
        .replica_set_name("destination")
        .start()
        .await?;
    say(&format!("  source       {}", source.uri()));
    say(&format!("  destination  {}", destination.uri()));

    let started = Instant::now();
    seed(&source, scale).await?;
    say(&format!(
        "Seeded {} documents in 5 collections, 2 databases, with a view, a capped collection and 6 \
         secondary indexes ({:.1}s).",
        scale.total(),
        started.elapsed().as_secs_f64()
    ));
    say("Starting a writer that keeps inserting, updating, replacing and deleting on the source.");
    let writer = Writer::start(&source, scale.orders, scale.products).await?;

    let config_path = dir.join("migration.toml");
    std::fs::write(&config_path, config_text(&source, &destination))?;
    say(&format!("Wrote {}.", config_path.display()));
    let loaded = config::load(&config_path)?;
    if !loaded.report.diagnostics.is_empty() {
        say(&loaded.report.render(false));
    }
    let config = loaded.config;

    say("\n$ mongoshift plan");
    let refreshed = plan::refresh(&config, &Default::default()).await;
    let plan_text = render::human(&refreshed.plan, false);
    say(&plan_text);
    if !refreshed.plan.is_valid() {
        writer.stop().await;
        return Err("the plan has failed checks".into());
    }

    say("$ mongoshift apply");
    let request = ApplyRequest {
        lockfile: lockfile::default_path(&config_path),
        plan_file: None,
        lock_timeout: Duration::ZERO,
        approve_cutover: false,
    };
    let (progress_tx, progress_rx) = watch::channel(Progress::empty(&config.name));
    let (outcome, approval) = tokio::join!(
        sync::apply(&config, request, progress_tx, cancel),
        watch_and_approve(progress_rx, &config, scale.linger, say),
    );
    approval?;
    let writer = writer.stop().await;
    Ok(Finished {
        outcome,
        writer,
        plan: plan_text,
        seeded: scale.total(),
    })
}

/// The configuration a user would write: verify everything, stop the source's writes at the
/// cutover, and wait for `mongoshift cutover` (the approval file).
fn config_text(source: &TestServerHandle, destination: &TestServerHandle) -> String {
    format!(
        r#"# Written by the quickstart: migrate everything from one replica set to another.
version = 1
name = "quickstart"

[source]
uri = "{}"

[destination]
uri = "{}"

[options]
verify = "full"

[cutover]
# Stop application writes on the source at the cutover (MongoDB 6.0+ user write blocking).
block_source_writes = true
max_lag = "2s"
"#,
        source.uri(),
        destination.uri()
    )
}

/// Narrates progress every two seconds and at each phase change; once the migration is ready
/// and has lingered, approves the cutover exactly as `mongoshift cutover` does.
async fn watch_and_approve(
    mut updates: watch::Receiver<Progress>,
    config: &config::Config,
    linger: Duration,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), BoxError> {
    let mut rate = Rate::default();
    let mut phase = None;
    let mut last_line = Instant::now();
    let mut ready_since: Option<Instant> = None;
    let mut approved = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            changed = updates.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
        }
        let p = updates.borrow_and_update().clone();
        let speed = rate.update(p.documents, p.bytes);
        if phase != Some(p.phase) || last_line.elapsed() >= Duration::from_secs(2) {
            if !p.namespaces.is_empty() {
                say(&format!("  {}", summary_line(&p, speed)));
            }
            phase = Some(p.phase);
            last_line = Instant::now();
        }
        if p.phase == Phase::Ready && !approved {
            let since = *ready_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= linger {
                say("\n$ mongoshift cutover    # the operator approves once the lag is small");
                let record = mongoshift::control::approve(config)?;
                say(&format!(
                    "  approved by {} at {}: writes on the source stop, the last changes drain, \
                     then the destination is verified",
                    record.approved_by, record.approved_at
                ));
                approved = true;
            }
        }
    }
    Ok(())
}

const CITIES: [&str; 8] = [
    "Lisbon", "Osaka", "Denver", "Nairobi", "Oslo", "Lima", "Pune", "Leeds",
];
const CATEGORIES: [&str; 6] = ["books", "garden", "kitchen", "toys", "audio", "sports"];
const STATUSES: [&str; 4] = ["new", "paid", "shipped", "delivered"];
const COLORS: [&str; 3] = ["red", "blue", "green"];
const KINDS: [&str; 3] = ["view", "click", "purchase"];

/// A small deterministic generator, so runs are comparable.
fn mix(i: i64) -> i64 {
    let mut x = i as u64 ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 1) as i64
}

fn price(i: i64) -> Bson {
    let text = format!("{}.{:02}", 1 + mix(i) % 300, mix(i + 7) % 100);
    text.parse::<Decimal128>()
        .map(Bson::Decimal128)
        .unwrap_or(Bson::Null)
}

fn order(i: i64, customers: i64, products: i64, now: DateTime) -> Document {
    let lines = 1 + mix(i) % 4;
    let items: Vec<Bson> = (0..lines)
        .map(|k| {
            let sku = mix(i * 5 + k) % products;
            Bson::Document(doc! {
                "sku": format!("sku-{sku:06}"),
                "qty": (1 + mix(i + k) % 5) as i32,
                "price": price(sku),
            })
        })
        .collect();
    let mut d = doc! {
        "_id": i,
        "customer": mix(i) % customers,
        "items": items,
        "total": (mix(i) % 100_000) as f64 / 100.0,
        "status": STATUSES[(mix(i) % 4) as usize],
        "created_at": DateTime::from_millis(now.timestamp_millis() - mix(i) % 31_536_000_000),
    };
    if i % 9 == 0 {
        d.insert("notes", "leave at the door");
    }
    d
}

async fn insert_all(
    client: &Client,
    db: &str,
    coll: &str,
    docs: impl Iterator<Item = Document>,
) -> Result<(), BoxError> {
    let collection = client.database(db).collection::<Document>(coll);
    let docs: Vec<Document> = docs.collect();
    for chunk in docs.chunks(5_000) {
        collection.insert_many(chunk.to_vec()).await?;
    }
    Ok(())
}

async fn seed(server: &TestServerHandle, scale: Scale) -> Result<(), BoxError> {
    let client = Client::with_uri_str(server.uri()).await?;
    let shop = client.database("shop");
    let analytics = client.database("analytics");
    let now = DateTime::now();

    insert_all(
        &client,
        "shop",
        "customers",
        (0..scale.customers).map(|i| {
            doc! {
                "_id": ObjectId::new(),
                "number": i,
                "name": format!("Customer {i}"),
                "email": format!("customer{i}@example.com"),
                "address": { "city": CITIES[(i % 8) as usize], "zip": format!("{:05}", mix(i) % 100_000) },
                "tags": (0..(i % 4)).map(|t| Bson::String(format!("tag{t}"))).collect::<Vec<_>>(),
                "vip": i % 17 == 0,
                "since": DateTime::from_millis(now.timestamp_millis() - mix(i) % 157_680_000_000),
            }
        }),
    )
    .await?;
    shop.run_command(doc! {
        "createIndexes": "customers",
        "indexes": [
            { "key": { "email": 1 }, "name": "email_1", "unique": true },
            { "key": { "address.city": 1, "name": 1 }, "name": "city_name" },
        ],
    })
    .await?;

    insert_all(
        &client,
        "shop",
        "products",
        (0..scale.products).map(|i| {
            doc! {
                "_id": format!("sku-{i:06}"),
                "title": format!("Product {i}"),
                "category": CATEGORIES[(i % 6) as usize],
                "price": price(i),
                "stock": (mix(i) % 500) as i32,
                "attributes": { "color": COLORS[(i % 3) as usize], "weight_g": (mix(i) % 5000) as i32 },
            }
        }),
    )
    .await?;
    shop.run_command(doc! {
        "createIndexes": "products",
        "indexes": [{ "key": { "category": 1, "price": -1 }, "name": "category_price" }],
    })
    .await?;

    insert_all(
        &client,
        "shop",
        "orders",
        (0..scale.orders).map(|i| order(i, scale.customers, scale.products, now)),
    )
    .await?;
    shop.run_command(doc! {
        "createIndexes": "orders",
        "indexes": [
            { "key": { "customer": 1, "created_at": -1 }, "name": "customer_recent" },
            { "key": { "status": 1 }, "name": "open_status", "partialFilterExpression": { "status": "new" } },
        ],
    })
    .await?;
    shop.run_command(doc! {
        "create": "open_orders",
        "viewOn": "orders",
        "pipeline": [{ "$match": { "status": "new" } }, { "$project": { "items": 0 } }],
    })
    .await?;

    analytics
        .run_command(doc! { "create": "events", "capped": true, "size": 64_i64 * 1024 * 1024 })
        .await?;
    insert_all(
        &client,
        "analytics",
        "events",
        (0..scale.events).map(|i| {
            doc! {
                "_id": ObjectId::new(),
                "kind": KINDS[(i % 3) as usize],
                "at": DateTime::from_millis(now.timestamp_millis() - i * 1000),
                "payload": Binary { subtype: BinarySubtype::Generic, bytes: mix(i).to_le_bytes().repeat(4) },
            }
        }),
    )
    .await?;

    insert_all(
        &client,
        "analytics",
        "sessions",
        (0..scale.sessions).map(|i| {
            doc! {
                "_id": Binary { subtype: BinarySubtype::Uuid, bytes: (mix(i) as u128 * 0x1_0000_0001).to_le_bytes().to_vec() },
                "customer": mix(i) % scale.customers,
                "last_seen": DateTime::from_millis(now.timestamp_millis() - mix(i) % 86_400_000),
            }
        }),
    )
    .await?;
    analytics
        .run_command(doc! {
            "createIndexes": "sessions",
            "indexes": [{ "key": { "last_seen": 1 }, "name": "expire_idle", "expireAfterSeconds": 2_592_000 }],
        })
        .await?;
    Ok(())
}

/// A driver error in one line: the server's code name, code and message when there is one.
fn describe(e: &mongodb::error::Error) -> String {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Command(c) => format!("{} ({}): {}", c.code_name, c.code, c.message),
        ErrorKind::Write(WriteFailure::WriteError(w)) => format!(
            "{} ({}): {}",
            w.code_name.as_deref().unwrap_or("WriteError"),
            w.code,
            w.message
        ),
        _ => e.to_string(),
    }
}

/// The application: writes to the source until stopped or refused.
struct Writer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<WriterTally>,
}

impl Writer {
    async fn start(
        server: &TestServerHandle,
        orders: i64,
        products: i64,
    ) -> Result<Self, BoxError> {
        let client = Client::with_uri_str(server.uri()).await?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let shop = client.database("shop");
            let orders_coll = shop.collection::<Document>("orders");
            let products_coll = shop.collection::<Document>("products");
            let events = client
                .database("analytics")
                .collection::<Document>("events");
            let mut tally = WriterTally::default();
            let mut i: i64 = 0;
            while !token.is_cancelled() {
                let now = DateTime::now();
                let next = orders + i;
                let result = match i % 8 {
                    0..=2 => orders_coll
                        .insert_one(order(next, 1_000, products, now))
                        .await
                        .map(|_| 1),
                    3 | 4 => orders_coll
                        .update_one(
                            doc! { "_id": mix(i) % orders },
                            doc! { "$set": { "status": "shipped", "shipped_at": now }, "$inc": { "revision": 1 } },
                        )
                        .await
                        .map(|r| r.modified_count),
                    5 => products_coll
                        .replace_one(
                            doc! { "_id": format!("sku-{:06}", mix(i) % products) },
                            doc! { "title": format!("Product (revised {i})"), "category": "clearance", "price": price(i), "stock": 0 },
                        )
                        .await
                        .map(|r| r.modified_count),
                    6 => orders_coll
                        .delete_one(doc! { "_id": next - 4 })
                        .await
                        .map(|r| r.deleted_count),
                    _ => events
                        .insert_one(doc! { "kind": "view", "at": now })
                        .await
                        .map(|_| 1),
                };
                match result {
                    Ok(n) => tally.writes += n,
                    Err(e) => {
                        tally.stopped_by = Some(describe(&e));
                        break;
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            tally
        });
        Ok(Self { stop, task })
    }

    /// Stops the writer (if the write block has not already) and returns its tally.
    async fn stop(self) -> WriterTally {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}
