//! The writer workload the warehouse sink tests (ClickHouse, Iceberg) run against Postgres:
//! tables with TOASTed values, a composite key and no key, and random changes of every kind.

use std::time::{Duration, Instant};

use crate::{writer_client, Rng};

/// `items` (TOASTed `doc`, an array, a decimal), `orders` (composite key) and `events` (no
/// key), with rows to start from.
pub const TABLES: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[],
                    at timestamptz DEFAULT now(), doc text);
-- Stored out of line without compression: an update that leaves doc alone does not send it.
ALTER TABLE items ALTER COLUMN doc SET STORAGE EXTERNAL;
CREATE TABLE orders (a int, b text, qty int, PRIMARY KEY (a, b));
CREATE TABLE events (x int, note text);
-- No key: captured with its whole old row, and kept only as a changelog in ClickHouse.
ALTER TABLE events REPLICA IDENTITY FULL;
INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY['t' || (g % 7)], now(),
                         repeat(md5(g::text), 100)
  FROM generate_series(1, 2000) g;
INSERT INTO orders SELECT g % 50, 'b' || (g / 50), g FROM generate_series(1, 1000) g;
";

/// Random changes for `seconds`: inserts, updates (most leave `doc` alone), deletes and key
/// changes of `items`, changes of `orders` (truncated once halfway and filled again), inserts
/// of `events`; `items` gains a column a third of the way in.
pub async fn write(url: String, seconds: u64) {
    let client = writer_client(&url).await;
    let mut rng = Rng::new(0xc1c);
    let start = Instant::now();
    let (mut truncated, mut altered) = (false, false);
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let mut txn = String::from("BEGIN;");
        for _ in 0..5 {
            n += 1;
            let id = rng.below(2500) + 1;
            let extra = if altered {
                format!(", extra = {n}")
            } else {
                String::new()
            };
            txn.push_str(&match rng.below(12) {
                0..=2 => format!(
                    "INSERT INTO items VALUES ({id}, 'new {n}', {}.{:02}, ARRAY['x','y{n}'], now(), \
                     repeat(md5('{n}'), 90)) ON CONFLICT (id) DO UPDATE SET name = excluded.name;",
                    rng.below(1000),
                    rng.below(100)
                ),
                3..=5 => format!(
                    "UPDATE items SET name = 'upd {n}', price = price + 1, at = now(){extra} \
                     WHERE id = {id};"
                ),
                6 => format!("UPDATE items SET doc = repeat(md5('d{n}'), 80) WHERE id = {id};"),
                7 => format!("DELETE FROM items WHERE id = {id};"),
                8 => format!(
                    "UPDATE items SET id = {} WHERE id = {id} AND NOT EXISTS \
                     (SELECT 1 FROM items WHERE id = {});",
                    id + 100_000,
                    id + 100_000
                ),
                9 => format!(
                    "INSERT INTO orders VALUES ({}, 'w{}', {n}) ON CONFLICT (a, b) DO UPDATE SET qty = {n};",
                    rng.below(60),
                    rng.below(30)
                ),
                10 => format!("DELETE FROM orders WHERE a = {} AND qty % 3 = 0;", rng.below(60)),
                _ => format!("INSERT INTO events VALUES ({n}, 'event {n}');"),
            });
        }
        txn.push_str("COMMIT;");
        // A key change may collide with a concurrent insert's key: that transaction fails.
        if client.batch_execute(&txn).await.is_err() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        if !altered && start.elapsed() > Duration::from_secs(seconds / 3) {
            client
                .batch_execute("ALTER TABLE items ADD COLUMN extra int")
                .await
                .unwrap();
            altered = true;
        }
        if !truncated && start.elapsed() > Duration::from_secs(seconds / 2) {
            client
                .batch_execute(
                    "TRUNCATE orders; INSERT INTO orders SELECT g, 'after', g FROM generate_series(1, 20) g",
                )
                .await
                .unwrap();
            truncated = true;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}
