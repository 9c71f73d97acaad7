//! Devices: the registry (what UEM, EDR and CAEP transmitters said about each device, and
//! the browsers stepgate registered itself), the posture API and CAEP receiver that feed it,
//! and which sessions each device's requests are bound to.
//!
//! - [`posture_api`]: `PUT {portal}/api/devices/posture`, `GET {portal}/api/devices/{id}`.
//! - [`caep`]: `POST {portal}/caep/events` (Shared Signals / CAEP), and the re-evaluation
//!   of a device's live sessions when its compliance changes.
//! - [`connectors`]: pulling devices from Hexnode, Intune and Jamf on a schedule and on
//!   "Re-check my device", applied like posture pushes.
//! - [`reevaluate`]: a device's live sessions judged again, through the access pipeline,
//!   when what is known of the device changes.
//! - [`rate_limit`]: the budgets that bound both unauthenticated endpoints; [`error`]:
//!   their refusals.
//!
//! What does not belong here: turning a device into the policy's view of it per request
//! (that is [`crate::access::signals`]).

pub mod caep;
pub mod connectors;
pub mod error;
pub mod posture_api;
pub mod rate_limit;
pub mod reevaluate;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post, put};
use axum::Router;
use chrono::{DateTime, Utc};
use stepgate_signals::device::{is_reserved_id, Device};
use stepgate_store::{DurableStore, HotStore, StoreError, UserRecord};

use crate::app::state::{Runtime, Shared};
use crate::session::cookies::CookieJar;
use crate::session::{Session, SessionData, Sessions};

/// How many sessions a device's index keeps, and for how long.
const SESSIONS_PER_DEVICE: usize = 200;
const SESSION_INDEX_AGE: Duration = Duration::from_secs(31 * 86_400);

/// The hot-store index of the sessions bound to a device.
pub fn sessions_key(device_id: &str) -> String {
    ["device-sessions:", device_id].concat()
}

/// Loads a device from the registry (a record that does not match the model is ignored;
/// stepgate's own records, which share the table, are never devices).
pub async fn load(durable: &dyn DurableStore, id: &str) -> Result<Option<Device>, StoreError> {
    if is_reserved_id(id) {
        return Ok(None);
    }
    Ok(durable.get_device(id).await?.and_then(|r| {
        Device::from_record_data(&r.id, r.owner.as_deref(), &r.data)
            .map_err(|e| tracing::warn!(error = %e, "device record ignored"))
            .ok()
    }))
}

/// Saves a device to the registry.
pub async fn save(
    durable: &dyn DurableStore,
    d: &Device,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if is_reserved_id(&d.id) {
        return Err(StoreError::Invalid(format!(
            "device id `{}` is reserved for stepgate's own records",
            d.id
        )));
    }
    durable
        .put_device(&stepgate_store::DeviceRecord {
            id: d.id.clone(),
            owner: d.owner.clone(),
            data: d.to_record_data(),
            updated_at: now,
        })
        .await
}

/// The registry and the device–session bindings.
pub struct Registry {
    durable: Arc<dyn DurableStore>,
    hot: Arc<dyn HotStore>,
    cookie: Option<stepgate_signals::device::DeviceCookieSigner>,
}

impl Registry {
    /// Over the (cached) stores; `cookie` signs device cookies when they are configured.
    pub fn new(
        durable: Arc<dyn DurableStore>,
        hot: Arc<dyn HotStore>,
        cookie: Option<stepgate_signals::device::DeviceCookieSigner>,
    ) -> Self {
        Registry {
            durable,
            hot,
            cookie,
        }
    }

    /// Loads a device ([`load`]).
    pub async fn load(&self, id: &str) -> Result<Option<Device>, StoreError> {
        load(self.durable.as_ref(), id).await
    }

    /// Saves a device ([`save`]).
    pub async fn save(&self, d: &Device, now: DateTime<Utc>) -> Result<(), StoreError> {
        save(self.durable.as_ref(), d, now).await
    }

    /// Deletes a device from the registry (never one of stepgate's own records). Whether
    /// there was one.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        if is_reserved_id(id) {
            return Ok(false);
        }
        self.durable.delete_device(id).await
    }

    /// Notes that session `session_id` is bound to `device_id` (for CAEP re-evaluation).
    pub async fn index_session(&self, device_id: &str, session_id: &str) {
        let v = serde_json::Value::String(session_id.to_string());
        let key = sessions_key(device_id);
        if let Err(e) = self
            .hot
            .push_recent(&key, &v, SESSIONS_PER_DEVICE, SESSION_INDEX_AGE)
            .await
        {
            tracing::error!(error = %e, "device session index not updated");
        }
    }

    /// The sessions indexed under a device.
    pub async fn sessions_of(&self, device_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .hot
            .recent(&sessions_key(device_id))
            .await?
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }

    /// Ties a session to the device its requests are bound to (first binding wins; a
    /// session does not move between devices), and indexes it for CAEP re-evaluation.
    pub async fn bind_session(
        &self,
        rt: &Runtime,
        sessions: &Sessions,
        session: &Session,
        device_id: &str,
        now: DateTime<Utc>,
    ) {
        if session.data.device_id.is_some() {
            return;
        }
        // First binding wins, also against another node binding the same session.
        let bind = |d: &mut SessionData| {
            if d.device_id.is_some() {
                return false;
            }
            d.device_id = Some(device_id.to_string());
            true
        };
        match sessions.modify(rt, &session.id, now, bind).await {
            Ok(Some(s)) if s.data.device_id.as_deref() == Some(device_id) => {
                self.index_session(device_id, &s.id).await
            }
            // Bound to another device meanwhile, or ended: nothing to bind.
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "session not bound to its device"),
        }
    }

    /// Whether a sign-in that completed as `session` registers the browser by itself
    /// (`devices.auto_register`): never, only after multi-factor (AAL2 or more), or always.
    pub fn registers_on_sign_in(rt: &Runtime, session: &Session) -> bool {
        use stepgate_signals::config::AutoRegister;
        match rt.config.devices.auto_register {
            AutoRegister::Never => false,
            AutoRegister::AfterMfa => session.data.aal(&rt.config.assurance) >= 2,
            AutoRegister::Always => true,
        }
    }

    /// The device this browser's valid device cookie names, when it has one.
    pub fn cookie_device(
        &self,
        rt: &Runtime,
        jar: &CookieJar,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let signer = self.cookie.as_ref()?;
        let c = &rt.config.devices.cookie;
        jar.get(&c.name)
            .and_then(|v| signer.verify(v, c.max_age.0, now).ok())
    }

    /// Whether device cookies are configured (their key is set): browsers can be registered.
    pub fn registers_browsers(&self) -> bool {
        self.cookie.is_some()
    }

    /// Removes `owner`'s browser registration `id` (a device stepgate registered; a UEM's
    /// record is the UEM's to remove). Whether there was one.
    pub async fn remove_browser(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        match self.load(id).await? {
            Some(d)
                if d.owner.as_deref() == Some(owner) && d.source.as_deref() == Some("stepgate") =>
            {
                self.delete(id).await
            }
            _ => Ok(false),
        }
    }

    /// Registers the browser of `jar` as a new "registered" (known but unmanaged) device
    /// of `user` — after a sign-in when [`Registry::registers_on_sign_in`], or when the
    /// user asks — and returns the long-lived signed cookie that ties the browser to it;
    /// `None` when device cookies are not configured or the browser already holds a valid
    /// one of this user's. The new device's id comes with it.
    pub async fn issue_cookie(
        &self,
        rt: &Runtime,
        jar: &CookieJar,
        user: &UserRecord,
        now: DateTime<Utc>,
    ) -> Option<(String, axum_extra::extract::cookie::Cookie<'static>)> {
        let signer = self.cookie.as_ref()?;
        let c = &rt.config.devices.cookie;
        if let Some(id) = self.cookie_device(rt, jar, now) {
            if let Ok(Some(d)) = self.load(&id).await {
                if d.owner.as_deref().is_none_or(|o| o == user.username) {
                    return None;
                }
            }
        }
        let mut device = Device::new(format!("browser-{}", crate::app::signer::random_id()));
        device.owner = Some(user.username.clone());
        device.state = stepgate_policy::DeviceState::Registered;
        device.source = Some("stepgate".into());
        if let Err(e) = self.save(&device, now).await {
            tracing::warn!(error = %e, "could not register the browser as a device");
            return None;
        }
        let mut cookie =
            axum_extra::extract::cookie::Cookie::new(c.name.clone(), signer.issue(&device.id, now));
        cookie.set_http_only(true);
        cookie.set_secure(rt.config.sessions.cookie.secure || c.name.starts_with("__Host-"));
        cookie.set_same_site(axum_extra::extract::cookie::SameSite::Lax);
        cookie.set_path("/");
        cookie.set_max_age(cookie::time::Duration::seconds(
            c.max_age.as_secs().min(i64::MAX as u64) as i64,
        ));
        Some((device.id, cookie))
    }
}

/// The device APIs (posture, CAEP receiver), under the portal path.
pub fn routes(portal_path: &str) -> Router<Shared> {
    let p = |s: &str| format!("{portal_path}{s}");
    Router::new()
        .route(&p("/api/devices/posture"), put(posture_api::put_posture))
        .route(
            &p("/api/devices/{id}"),
            get(posture_api::get_device).delete(posture_api::delete_device),
        )
        .route(&p("/caep/events"), post(caep::receive))
}
