//! Policy sets saved in the durable store (`admin.policy_edits: store`) through the admin
//! API, over real HTTP: a draft validated as a reload is (a bad one refused with its line
//! and column, changing nothing), a saved version deciding the next request, a diff, a
//! rollback, the audit trail, a node started later running the newest version; and on two
//! nodes sharing PostgreSQL and Redis, a save on one node deciding the other's next
//! request within a second. The console's versions page (history, a version, a diff, a
//! draft checked, replayed and saved, a rollback) under the API's rules; a reload that
//! changes `admin.policy_edits` refused; a version written to the store by `stepgate policy
//! rollback` put in force at the next reload.
//!
//! One file a theme: `api`, `nodes`, `console`, `reload`; what they share is in
//! `common`.

#[path = "../support/mod.rs"]
mod support;

mod api;
mod common;
mod console;
mod nodes;
mod reload;
