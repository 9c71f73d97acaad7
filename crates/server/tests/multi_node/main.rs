//! Several stepgate nodes on one PostgreSQL and one Redis, each with its own read cache
//! (`sessions.cache_ttl: 10m`, so that only the change feed, never the TTL, can explain a
//! change seen elsewhere): what a user or an admin does on one node holds on every node on
//! the very next request, and losing Redis refuses requests instead of serving them from a
//! cache that can no longer hear about changes.
//!
//! Each node is a whole stepgate (its own state, caches, listener and subscription) in this
//! test's process. The tests run when `STEPGATE_TEST_POSTGRES_URL` and
//! `STEPGATE_TEST_REDIS_URL` are set (`.ci/run` sets both); each uses its own PostgreSQL
//! schema and Redis key prefix. The fault test starts a Redis of its own (`redis-server`)
//! on a free port, so that stopping it touches nothing else.
//!
//! One file an event: `propagation`, `redis_outage`, `postgres_outage`,
//! `postgres_restart`; what they share is in `common`.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod postgres_outage;
mod postgres_restart;
mod propagation;
mod redis_outage;
