//! PostgreSQL durable store (lands in the next commit).
