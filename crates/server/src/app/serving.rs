//! The request being served, for code deep inside its handler: its id (the key of its
//! decision, in its log lines and answer) and its reader (the language of every page and
//! message). One task-local, set around each request by the connection service
//! ([`super::routes`]): each poll of the request's future swaps it in and out, so one is
//! cheaper than two.

use crate::access::RequestId;
use crate::i18n::Reader;

/// What the request being served is known by.
pub struct Serving {
    /// Its id ([`RequestId::current`] reads it).
    pub id: RequestId,
    /// Its reader ([`crate::i18n::lang`] reads it).
    pub reader: Reader,
}

tokio::task_local! {
    /// The request this task is serving.
    pub static SERVING: Serving;
}
