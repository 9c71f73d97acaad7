//! The multi-node hot-state backend: Redis.
//!
//! Every key starts with `store.redis.key_prefix`. Expiry is Redis's own (`PEXPIRE`), so
//! nothing needs purging. Read-modify-write operations are Lua scripts, atomic on the server.
//! Session scripts touch the user's index set next to the session key, which needs a
//! standalone Redis (or a proxy that keeps a user's keys together), not Redis Cluster.

use std::time::Duration;

use crate::redis_conn::{Conn, Target};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{AsyncCommands, Script};

use crate::config::{redact_url, RedisConfig};
use crate::error::{StoreError, StoreResult};
use crate::model::{
    ct_eq, from_ms, json_text, now_ms, parse_json, to_ms, ttl_ms, OtpCheck, SessionEntry,
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

// Sessions are hashes {u: user id, d: data JSON}; `usess:<user>` is a set of the user's
// session ids, kept at least as long as the longest of them.
const PUT_SESSION: &str = r"
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return 1";

const GET_SESSION: &str = r"
local v = redis.call('HMGET', KEYS[1], 'u', 'd')
if not v[1] then return false end
return {v[1], v[2], redis.call('PTTL', KEYS[1])}";

// ARGV: ttl ms, index key prefix.
const TOUCH_SESSION: &str = r"
local u = redis.call('HGET', KEYS[1], 'u')
if not u then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local idx = ARGV[2] .. u
if redis.call('PTTL', idx) < tonumber(ARGV[1]) then redis.call('PEXPIRE', idx, ARGV[1]) end
return 1";

// ARGV: data, ttl ms, index key prefix.
const UPDATE_SESSION: &str = r"
local u = redis.call('HGET', KEYS[1], 'u')
if not u then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local idx = ARGV[3] .. u
if redis.call('PTTL', idx) < tonumber(ARGV[2]) then redis.call('PEXPIRE', idx, ARGV[2]) end
return 1";

// ARGV: index key prefix, session id.
const DELETE_SESSION: &str = r"
local u = redis.call('HGET', KEYS[1], 'u')
if not u then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[1] .. u, ARGV[2])
return 1";

// KEYS[1]: the user's index. ARGV: session key prefix, user id, delete (1) or list (0).
const USER_SESSIONS: &str = r"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[1] .. id
  if redis.call('HGET', k, 'u') == ARGV[2] then
    table.insert(out, id)
    if ARGV[3] == '1' then redis.call('DEL', k) end
  else
    redis.call('SREM', KEYS[1], id)
  end
end
if ARGV[3] == '1' then redis.call('DEL', KEYS[1]) end
return out";

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
            .key(self.key("usess", user_id))
            .arg(user_id)
            .arg(json_text(data)?)
            .arg(ttl_arg(ttl))
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
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
        let done: i64 = Script::new(TOUCH_SESSION)
            .key(self.key("sess", id))
            .arg(ttl_arg(ttl))
            .arg(self.key("usess", ""))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }

    async fn update_session(
        &self,
        id: &str,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let done: i64 = Script::new(UPDATE_SESSION)
            .key(self.key("sess", id))
            .arg(json_text(data)?)
            .arg(ttl_arg(ttl))
            .arg(self.key("usess", ""))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }

    async fn delete_session(&self, id: &str) -> StoreResult<bool> {
        let done: i64 = Script::new(DELETE_SESSION)
            .key(self.key("sess", id))
            .arg(self.key("usess", ""))
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }

    async fn list_sessions_for_user(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let mut ids: Vec<String> = Script::new(USER_SESSIONS)
            .key(self.key("usess", user_id))
            .arg(self.key("sess", ""))
            .arg(user_id)
            .arg("0")
            .invoke_async(&mut self.conn())
            .await?;
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
        let mut cursor: u64 = 0;
        let mut n = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn())
                .await?;
            n += keys.len() as u64;
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }

    async fn delete_sessions_for_user(&self, user_id: &str) -> StoreResult<u64> {
        let ids: Vec<String> = Script::new(USER_SESSIONS)
            .key(self.key("usess", user_id))
            .arg(self.key("sess", ""))
            .arg(user_id)
            .arg("1")
            .invoke_async(&mut self.conn())
            .await?;
        Ok(ids.len() as u64)
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
