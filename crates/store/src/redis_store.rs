//! Redis hot store (lands in the next commit).
