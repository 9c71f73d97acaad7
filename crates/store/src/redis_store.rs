//! The multi-node hot-state backend: Redis.
//!
//! Every key starts with `store.redis.key_prefix`. Expiry is Redis's own (`PEXPIRE`), so
//! nothing needs purging. Read-modify-write operations are Lua scripts, atomic on the server,
//! each on one key, so the same code runs on one Redis, behind Sentinel and on Redis Cluster
//! (see the notes on the session scripts for how a user's session index is kept).

use std::time::Duration;

use crate::redis_conn::{Conn, Target};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use redis::{AsyncCommands, Script};

use crate::config::{redact_url, RedisConfig};
use crate::error::{StoreError, StoreResult};
use crate::model::{
    another_spelling, ct_eq, from_ms, json_text, now_ms, parse_json, to_ms, ttl_ms, OtpCheck,
    SessionEntry, SessionWrite,
};
use crate::traits::HotStore;

/// Hot state in Redis, shared by every stepgate node. Cheap to clone (one multiplexed,
/// auto-reconnecting connection).
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    label: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("store", &self.label)
            .field("prefix", &self.prefix)
            .finish()
    }
}

// Sessions are hashes {u: user id, d: data JSON} at `sess:<id>`; `usess:<user>` is a set of
// the user's session ids, kept at least as long as the longest of them.
//
// Every script touches one key, so that each runs on one Redis Cluster slot: a session's key
// and its user's index are in different slots, and a session is found by its id alone (no
// hash tag can put them together). The index is therefore written by a second command after
// the session's own, in an order that keeps "sign out everywhere" complete:
//   - put: the session, then its id into the index. A sign-out-everywhere that runs between
//     the two does not see the new session (it was not handed out yet: the put has not
//     returned) and does not remove its id, which lands in the index after it.
//   - touch/update/replace: the session (only while it lives), then the index's expiry is
//     pushed to at least the session's, so the index never ends before a live session.
//   - delete: the session, then its id from the index (a left-over id is skipped and
//     removed by listing).
//   - listing and sign-out-everywhere read the index, then each session, and take an id
//     off the index only when its session is gone or belongs to someone else; they never
//     delete the index whole, so an id a concurrent put adds is kept.
// The keys and their contents are the same as when these were one script per operation
// in earlier versions, so sessions written by an older node stay readable and listed, and
// old and new nodes can run side by side during an upgrade.

// ARGV: user id, data, ttl ms.
const PUT_SESSION: &str = r"
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1";

// KEYS[1]: the user's index. ARGV: session id, ttl ms (the index lasts at least that long).
const INDEX_ADD: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1";

// KEYS[1]: the user's index. ARGV: ttl ms. An index that is gone stays gone.
const INDEX_EXTEND: &str = r"
local t = redis.call('PTTL', KEYS[1])
if t ~= -2 and t < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1";

const GET_SESSION: &str = r"
local v = redis.call('HMGET', KEYS[1], 'u', 'd')
if not v[1] then return false end
return {v[1], v[2], redis.call('PTTL', KEYS[1])}";

// ARGV: ttl ms. The owner, or nil when the session is gone.
const TOUCH_SESSION: &str = r"
local u = redis.call('HGET', KEYS[1], 'u')
if not u then return false end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return u";

// ARGV: data, ttl ms. The owner, or nil when the session is gone.
const UPDATE_SESSION: &str = r"
local u = redis.call('HGET', KEYS[1], 'u')
if not u then return false end
redis.call('HSET', KEYS[1], 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return u";

// ARGV: data, ttl ms, expected data. {1, owner} written, {2, data held} changed, {0, nil}
// gone.
const REPLACE_SESSION: &str = r"
local v = redis.call('HMGET', KEYS[1], 'u', 'd')
if not v[1] then return {0, false} end
if v[2] ~= ARGV[3] then return {2, v[2]} end
redis.call('HSET', KEYS[1], 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, v[1]}";

// The owner of the session deleted, or nil when it was gone.
const DELETE_SESSION: &str = r"
local u = redis.call('HGET', KEYS[1], 'u')
if not u then return false end
redis.call('DEL', KEYS[1])
return u";

// ARGV: user id. Deletes the session if it is that user's: 1 deleted, 0 gone, -1 another's.
const DELETE_OWNED: &str = r"
local u = redis.call('HGET', KEYS[1], 'u')
if not u then return 0 end
if u ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
return 1";

// ARGV: user id. 1 when the session is live and that user's, 0 gone, -1 another's.
const OWNED_BY: &str = r"
local u = redis.call('HGET', KEYS[1], 'u')
if not u then return 0 end
if u ~= ARGV[1] then return -1 end
return 1";

/// How many session keys listing or sign-out-everywhere asks about at once.
const SESSIONS_AT_ONCE: usize = 32;

const INCR: &str = r"
local c = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return c";

// One-time codes are hashes {h: code hash, a: attempts left}. Spends an attempt and returns
// {1, hash, attempts left}, or {0, nil, nil} when there is no usable code.
const SPEND_OTP: &str = r"
local h = redis.call('HGET', KEYS[1], 'h')
if not h then return {0, false, false} end
local a = redis.call('HINCRBY', KEYS[1], 'a', -1)
if a < 0 then redis.call('DEL', KEYS[1]) return {0, false, false} end
return {1, h, a}";

// Deletes the code if it still has hash ARGV[1]; whether it did.
const CONSUME_OTP: &str = r"
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0";

const PUT_OTP: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'a', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1";

const PUSH_RECENT: &str = r"
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1";

impl RedisStore {
    /// Connects (retrying with backoff while Redis is down).
    pub async fn connect(config: &RedisConfig) -> StoreResult<Self> {
        if config.key_prefix.is_empty() {
            return Err(StoreError::Config(
                "`store.redis.key_prefix` must not be empty".into(),
            ));
        }
        let label = redact_url(&config.url);
        let target = Target::from_config(config, &label)?;
        let conn = Conn::connect(target).await?;
        tracing::info!(store = %label, prefix = %config.key_prefix, "connected to the Redis store");
        Ok(RedisStore {
            conn,
            prefix: config.key_prefix.clone(),
            label,
        })
    }

    fn key(&self, kind: &str, k: &str) -> String {
        format!("{}{kind}:{k}", self.prefix)
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// After a session's own key was written: with `owner` (the session was live), pushes
    /// the owner's index to last at least `ttl`, so the index never ends before a session
    /// it names. Whether the session was live.
    async fn index_lasts(&self, owner: Option<&str>, ttl: Duration) -> StoreResult<bool> {
        let Some(owner) = owner else {
            return Ok(false);
        };
        let _: i64 = Script::new(INDEX_EXTEND)
            .key(self.key("usess", owner))
            .arg(ttl_arg(ttl))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(true)
    }

    /// Asks about every session the user's index names, a few at a time: whether it is
    /// live and this user's (1), gone (0) or another user's (-1); with `delete`, deletes
    /// the user's. Then takes off the index the ids that no longer name a live session of
    /// the user. Any failure fails the whole, with the index untouched: an incomplete "sign
    /// out everywhere" is an error, never a quiet partial success.
    async fn each_indexed_session(
        &self,
        user_id: &str,
        delete: bool,
    ) -> StoreResult<Vec<(String, i64)>> {
        let index = self.key("usess", user_id);
        let ids: Vec<String> = self.conn().smembers(&index).await?;
        let script = Script::new(if delete { DELETE_OWNED } else { OWNED_BY });
        let script = &script;
        let results: Vec<(String, i64)> = futures_util::stream::iter(ids)
            .map(|id| async move {
                let n: i64 = script
                    .key(self.key("sess", &id))
                    .arg(user_id)
                    .invoke_async(&mut self.conn())
                    .await?;
                Ok::<_, StoreError>((id, n))
            })
            .buffer_unordered(SESSIONS_AT_ONCE)
            .try_collect()
            .await?;
        let unlist: Vec<&str> = results
            .iter()
            .filter(|(_, n)| delete || *n != 1)
            .map(|(id, _)| id.as_str())
            .collect();
        if !unlist.is_empty() {
            let _: i64 = self.conn().srem(&index, unlist).await?;
        }
        Ok(results)
    }
}

fn ttl_arg(ttl: Duration) -> i64 {
    ttl_ms(ttl).max(1)
}

#[async_trait]
impl HotStore for RedisStore {
    async fn put_session(
        &self,
        id: &str,
        user_id: &str,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<()> {
        // Moving a session to another user leaves a stale id in the old index; listing skips
        // and prunes it.
        let _: i64 = Script::new(PUT_SESSION)
            .key(self.key("sess", id))
            .arg(user_id)
            .arg(json_text(data)?)
            .arg(ttl_arg(ttl))
            .invoke_async(&mut self.conn())
            .await?;
        let indexed: StoreResult<i64> = Script::new(INDEX_ADD)
            .key(self.key("usess", user_id))
            .arg(id)
            .arg(ttl_arg(ttl))
            .invoke_async(&mut self.conn())
            .await
            .map_err(StoreError::from);
        if let Err(e) = indexed {
            // A session its user's index does not name would escape "sign out everywhere":
            // take it back (it was never handed out, the put fails).
            let _ = self.delete_session(id).await;
            return Err(e);
        }
        Ok(())
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionEntry>> {
        let got: Option<(String, String, i64)> = Script::new(GET_SESSION)
            .key(self.key("sess", id))
            .invoke_async(&mut self.conn())
            .await?;
        match got {
            Some((user_id, data, pttl)) if pttl > 0 => Ok(Some(SessionEntry {
                user_id,
                data: parse_json("session data", &data)?,
                expires_at: from_ms(to_ms(&now_ms()).saturating_add(pttl)),
            })),
            _ => Ok(None),
        }
    }

    async fn touch_session(&self, id: &str, ttl: Duration) -> StoreResult<bool> {
        let owner: Option<String> = Script::new(TOUCH_SESSION)
            .key(self.key("sess", id))
            .arg(ttl_arg(ttl))
            .invoke_async(&mut self.conn())
            .await?;
        self.index_lasts(owner.as_deref(), ttl).await
    }

    async fn update_session(
        &self,
        id: &str,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let owner: Option<String> = Script::new(UPDATE_SESSION)
            .key(self.key("sess", id))
            .arg(json_text(data)?)
            .arg(ttl_arg(ttl))
            .invoke_async(&mut self.conn())
            .await?;
        self.index_lasts(owner.as_deref(), ttl).await
    }

    async fn replace_session(
        &self,
        id: &str,
        expected: &serde_json::Value,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<SessionWrite> {
        let text = json_text(data)?;
        let mut kept = json_text(expected)?;
        // At most twice: over this build's spelling of `expected`, then over the text the
        // store holds when it spells the same state otherwise (see `another_spelling`).
        for _ in 0..2 {
            // The owner when written; the text held when it differs from `kept`.
            let (done, said): (i64, Option<String>) = Script::new(REPLACE_SESSION)
                .key(self.key("sess", id))
                .arg(&text)
                .arg(ttl_arg(ttl))
                .arg(&kept)
                .invoke_async(&mut self.conn())
                .await?;
            match (done, said) {
                (1, owner) => {
                    self.index_lasts(owner.as_deref(), ttl).await?;
                    return Ok(SessionWrite::Written);
                }
                (2, Some(held)) if another_spelling(&held, &kept, expected) => kept = held,
                (2, _) => return Ok(SessionWrite::Changed),
                _ => return Ok(SessionWrite::Gone),
            }
        }
        Ok(SessionWrite::Changed)
    }

    async fn delete_session(&self, id: &str) -> StoreResult<bool> {
        let owner: Option<String> = Script::new(DELETE_SESSION)
            .key(self.key("sess", id))
            .invoke_async(&mut self.conn())
            .await?;
        let Some(owner) = owner else {
            return Ok(false);
        };
        // The session is gone; an id left in the index (this failing) is skipped and
        // removed by the next listing.
        let unlisted: Result<i64, _> = self.conn().srem(self.key("usess", &owner), id).await;
        if let Err(e) = unlisted {
            tracing::debug!(error = %e, "a deleted session's id stays in its user's index until listed");
        }
        Ok(true)
    }

    async fn list_sessions_for_user(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let ids = self
            .each_indexed_session(user_id, false)
            .await?
            .into_iter()
            .filter_map(|(id, owned)| (owned == 1).then_some(id));
        let mut ids: Vec<String> = ids.collect();
        ids.sort();
        Ok(ids)
    }

    async fn count_sessions(&self) -> StoreResult<u64> {
        // A session key expires with its session, so the live ones are the keys there are.
        let literal: String = self
            .key("sess", "")
            .chars()
            .flat_map(|c| match c {
                '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let pattern = format!("{literal}*");
        // Every primary's share on a Cluster; batches of 1000, so Redis is never blocked.
        self.conn.count_keys(&pattern).await
    }

    async fn delete_sessions_for_user(&self, user_id: &str) -> StoreResult<u64> {
        let done = self.each_indexed_session(user_id, true).await?;
        Ok(done.iter().filter(|(_, n)| *n == 1).count() as u64)
    }

    async fn incr_counter(&self, key: &str, window: Duration) -> StoreResult<u64> {
        let n: i64 = Script::new(INCR)
            .key(self.key("count", key))
            .arg(ttl_arg(window))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn get_counter(&self, key: &str) -> StoreResult<u64> {
        let n: Option<i64> = self.conn().get(self.key("count", key)).await?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    async fn reset_counter(&self, key: &str) -> StoreResult<()> {
        let _: i64 = self.conn().del(self.key("count", key)).await?;
        Ok(())
    }

    async fn set_ban(&self, key: &str, until: DateTime<Utc>) -> StoreResult<()> {
        let k = self.key("ban", key);
        let left = to_ms(&until).saturating_sub(to_ms(&now_ms()));
        if left <= 0 {
            let _: i64 = self.conn().del(k).await?;
        } else {
            let left = u64::try_from(left).unwrap_or(1);
            let _: () = self.conn().pset_ex(k, to_ms(&until), left).await?;
        }
        Ok(())
    }

    async fn ban_until(&self, key: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let until: Option<i64> = self.conn().get(self.key("ban", key)).await?;
        Ok(until.filter(|&u| u > to_ms(&now_ms())).map(from_ms))
    }

    async fn clear_ban(&self, key: &str) -> StoreResult<()> {
        let _: i64 = self.conn().del(self.key("ban", key)).await?;
        Ok(())
    }

    async fn put_otp(
        &self,
        key: &str,
        code_hash: &[u8],
        ttl: Duration,
        max_attempts: u32,
    ) -> StoreResult<()> {
        if max_attempts == 0 {
            return Err(StoreError::Invalid(
                "a one-time code needs at least one attempt".into(),
            ));
        }
        let _: i64 = Script::new(PUT_OTP)
            .key(self.key("otp", key))
            .arg(code_hash)
            .arg(max_attempts)
            .arg(ttl_arg(ttl))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn check_otp(&self, key: &str, code_hash: &[u8]) -> StoreResult<OtpCheck> {
        let k = self.key("otp", key);
        let spent: (i64, Option<Vec<u8>>, Option<i64>) = Script::new(SPEND_OTP)
            .key(&k)
            .invoke_async(&mut self.conn())
            .await?;
        let (1, Some(stored), Some(left)) = spent else {
            return Ok(OtpCheck::Missing);
        };
        if ct_eq(&stored, code_hash) {
            let won: i64 = Script::new(CONSUME_OTP)
                .key(&k)
                .arg(&stored)
                .invoke_async(&mut self.conn())
                .await?;
            return Ok(if won == 1 {
                OtpCheck::Valid
            } else {
                OtpCheck::Missing
            });
        }
        if left <= 0 {
            let _: i64 = Script::new(CONSUME_OTP)
                .key(&k)
                .arg(&stored)
                .invoke_async(&mut self.conn())
                .await?;
        }
        Ok(OtpCheck::Invalid {
            attempts_left: u32::try_from(left).unwrap_or(0),
        })
    }

    async fn delete_otp(&self, key: &str) -> StoreResult<()> {
        let _: i64 = self.conn().del(self.key("otp", key)).await?;
        Ok(())
    }

    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key("once", key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_arg(ttl))
            .query_async(&mut self.conn())
            .await?;
        Ok(set.is_some())
    }

    async fn push_recent(
        &self,
        key: &str,
        value: &serde_json::Value,
        keep: usize,
        ttl: Duration,
    ) -> StoreResult<()> {
        let _: i64 = Script::new(PUSH_RECENT)
            .key(self.key("recent", key))
            .arg(json_text(value)?)
            .arg(keep.max(1))
            .arg(ttl_arg(ttl))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn recent(&self, key: &str) -> StoreResult<Vec<serde_json::Value>> {
        let items: Vec<String> = self.conn().lrange(self.key("recent", key), 0, -1).await?;
        items
            .iter()
            .map(|s| parse_json("recent entry", s))
            .collect()
    }

    async fn purge_expired(&self) -> StoreResult<u64> {
        // Redis expires keys itself.
        Ok(0)
    }
}
