//! Two nodes sharing PostgreSQL and Redis: a save on one decides the other's next
//! request within a second.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use stepgate_store::{new_id, PostgresConfig, RedisConfig, SecretKey};

use crate::common::*;
use crate::support::{skipped, upstream, Server};

#[tokio::test]
async fn a_save_on_one_node_decides_the_other_nodes_next_request_within_a_second() {
    let pg = std::env::var("STEPGATE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let redis = std::env::var("STEPGATE_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let (Some(pg), Some(redis)) = (pg, redis) else {
        skipped::record(
            "PostgreSQL and Redis",
            "set STEPGATE_TEST_POSTGRES_URL and STEPGATE_TEST_REDIS_URL",
        );
        return;
    };
    let run = &new_id()[..12];
    let pg = PostgresConfig {
        schema: format!("stepgate_policies_{run}"),
        ..PostgresConfig::new(pg)
    };
    let redis = RedisConfig {
        key_prefix: format!("stepgate-policies-{run}:"),
        ..RedisConfig::new(redis)
    };
    let key = SecretKey::generate();
    let up = upstream::text("upstream").await;
    let node = |users: bool| {
        let (pg, redis) = (pg.clone(), redis.clone());
        let b = Server::build(CONFIG)
            .with("UPSTREAM", up)
            .key(key.clone())
            .in_file("stepgate.yaml")
            .configure(move |c| {
                c.store.postgres = Some(pg);
                c.store.redis = Some(redis);
            });
        if users {
            b.demo_users()
        } else {
            b
        }
    };
    let a = node(true).start().await;
    let b = node(false).start().await;
    let t = admin_token(&a).await;
    let jane = signed_in(&b).await;
    assert_eq!(reports(&b, &jane).await, 200);
    let (status, v) = save(&a, &t, OPEN, None).await;
    assert_eq!(status, 201, "{v}");

    // Saved on A; B's next requests, polled, until B denies.
    let (status, v) = save(&a, &t, CLOSED, Some(1)).await;
    assert_eq!(status, 201, "{v}");
    let saved = Instant::now();
    while reports(&b, &jane).await != 403 {
        assert!(
            saved.elapsed() < Duration::from_secs(5),
            "node B never ran the saved set"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = saved.elapsed();
    eprintln!("node B ran the set saved on node A {took:?} after the save answered");
    assert!(
        took < Duration::from_secs(1),
        "node B ran the saved set after {took:?}"
    );

    // A bad draft on A: refused with its position, nothing saved, nothing changed on B.
    let (status, p) = save(&a, &t, BAD, Some(2)).await;
    assert_positioned(status, &p);
    let (_, listed) = call(&b, Method::GET, "/policies/versions", &t, None).await;
    assert_eq!(
        (
            listed["items"].as_array().unwrap().len(),
            &listed["in_force"]
        ),
        (2, &json!(2))
    );
    assert_eq!(reports(&b, &jane).await, 403);

    // Rolled back on B: A follows.
    let (status, v) = call(&b, Method::POST, "/policies/versions/1/rollback", &t, None).await;
    assert_eq!(status, 201, "{v}");
    let rolled = Instant::now();
    while reports(&a, &jane).await != 200 {
        assert!(
            rolled.elapsed() < Duration::from_secs(5),
            "node A never rolled back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        rolled.elapsed() < Duration::from_secs(1),
        "{:?}",
        rolled.elapsed()
    );
    assert_eq!(reports(&b, &jane).await, 200);

    drop((a, b));
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", pg.schema))
        .execute(&pool)
        .await
        .unwrap();
}
