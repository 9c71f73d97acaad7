//! The user's devices, on the sessions page: which of them stepgate knows, registering this
//! browser as a device deliberately (behind a fresh factor, like a change to one's
//! factors), and removing a browser registration. A browser becomes a registered device
//! by itself only as `devices.auto_register` says ([`crate::devices::Registry`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::Form;
use chrono::Utc;
use minijinja::{context, Value};
use stepgate_signals::device::Device;
use stepgate_store::UserRecord;

use super::account::AccountForm;
use super::error::PortalError;
use super::extract::{check_csrf, CsrfField, FreshForm, Here, SignedIn, Visit};
use super::{audit, pages::Pages};
use crate::app::responses::see_other;
use crate::app::state::Shared;
use crate::session::cookies::CookieJar;

/// The user's devices as the sessions page lists them; the one this browser is bound to
/// by its device cookie marked.
pub async fn listed(st: &Shared, rt: &Here, jar: &CookieJar, user: &UserRecord) -> Vec<Value> {
    let this = st.devices.cookie_device(rt, jar, Utc::now());
    let records = st
        .stores
        .durable
        .list_devices(&user.username)
        .await
        .unwrap_or_default();
    records
        .iter()
        .filter_map(|r| Device::from_record_data(&r.id, r.owner.as_deref(), &r.data).ok())
        .map(|d| {
            let browser = d.source.as_deref() == Some("stepgate");
            context! {
                id => d.id, state => d.state.as_str(), browser => browser,
                this => this.as_deref() == Some(d.id.as_str()),
                name => d.hostname.or(d.model).unwrap_or_default(),
            }
        })
        .collect()
}

/// `POST {portal}/devices/register`: registers this browser as a device of the user (a
/// "registered", known but unmanaged, device with its signed cookie), behind a fresh factor.
pub async fn register_browser(
    Visit { st, here: rt, jar }: Visit,
    f: FreshForm<AccountForm>,
) -> Response {
    if !st.devices.registers_browsers() {
        let why = "Registering browsers is not set up here (the device cookie key, devices.cookie.key_env, is not set).";
        return Pages::global().render(
            StatusCode::CONFLICT,
            "message.html",
            context! { portal => rt.portal(), title => "Not available", message => why, link => rt.portal_url("/sessions"), link_text => "Back" },
        );
    }
    let now = Utc::now();
    let Some((_, cookie)) = st.devices.issue_cookie(&rt, &jar, &f.user, now).await else {
        // Already registered (or the store refused, which the registry logged).
        return see_other(&rt.portal_url("/sessions"));
    };
    let detail = serde_json::json!({ "device_cookie": cookie.name() });
    audit(&st, "device.registered", &f.user.username, None, detail).await;
    (
        jar.set(cookie),
        see_other(&rt.portal_url("/sessions?done=device")),
    )
        .into_response()
}

/// `POST {portal}/devices/remove`: removes one of the user's browser registrations (the
/// form's `id`); a browser holding its cookie is unregistered from its next request.
pub async fn remove_browser(
    Visit { st, here: rt, jar }: Visit,
    SignedIn { session, user }: SignedIn,
    Form(f): Form<AccountForm>,
) -> Result<Response, PortalError> {
    check_csrf(&st, &rt, &jar, Some(&session), f.csrf())?;
    if !st
        .devices
        .remove_browser(&user.username, f.handle())
        .await?
    {
        return Err(PortalError::BadRequest);
    }
    let detail = serde_json::json!({ "device_id": f.handle(), "by": "user" });
    audit(&st, "device.removed", &user.username, None, detail).await;
    Ok(see_other(&rt.portal_url("/sessions")))
}
