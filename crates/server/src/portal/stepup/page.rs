//! The step-up page: the factors that would meet what the policy asked for on top of what
//! the session has ([`offers`]), how the page lays them out (the strongest first, the
//! others behind "Try another way", recovery codes apart), and rendering it.

use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use minijinja::context;
use serde::Serialize;
use stepgate_authn::service::Authenticator;
use stepgate_authn::{satisfies, FactorKind};
use stepgate_policy::StepUpRequirement;
use stepgate_store::UserRecord;

use super::Page;
use crate::app::state::Shared;
use crate::portal::extract::Here;
use crate::portal::factor_title;
use crate::portal::pages::Pages;
use crate::session::Session;

/// One factor the page offers.
#[derive(Serialize)]
struct Offer {
    kind: &'static str,
    title: &'static str,
    questions: Vec<String>,
    asked: String,
}

/// The factors that would meet `req` on top of what the session has, passkeys first; and
/// whether the user may go and enrol one (not in the middle of a sign-in).
async fn offers(
    st: &Shared,
    user: &UserRecord,
    session: &Session,
    req: &StepUpRequirement,
    rt: &Here,
) -> (Vec<Offer>, bool) {
    let t = Utc::now();
    let enrolled = st.authn.enrolled(user).await.unwrap_or_default();
    let for_step = Authenticator::enrolled_for_step_up(&enrolled);
    let sat = satisfies(
        &session.data.auth_state(),
        req,
        &rt.config.assurance,
        &for_step,
        t,
    );
    let mut kinds: Vec<FactorKind> = Vec::new();
    let had_password = session
        .data
        .factors
        .iter()
        .any(|f| f.kind == FactorKind::Password);
    for k in sat.candidates.iter().flatten() {
        // The password was just given for this sign-in: never ask for it twice.
        let password_again = *k == FactorKind::Password && had_password;
        if !(kinds.contains(k) || session.data.pending && password_again) {
            kinds.push(*k);
        }
    }
    // Strongest first; recovery codes last, for emergencies.
    kinds.sort_by_key(|k| match k {
        FactorKind::Webauthn => 0,
        FactorKind::Totp => 1,
        FactorKind::EmailOtp | FactorKind::SmsOtp => 2,
        FactorKind::RecoveryCodes => 9,
        _ => 5,
    });
    let mut out = Vec::new();
    for k in kinds {
        let mut o = Offer {
            kind: k.as_str(),
            title: factor_title(k.as_str()),
            questions: Vec::new(),
            asked: String::new(),
        };
        if k == FactorKind::SecurityQuestions {
            if let Ok(qs) = st.authn.questions_challenge(user).await {
                let idx: Vec<String> = qs.iter().map(|(i, _)| i.to_string()).collect();
                o.asked = st.signer.sign("asked", &idx.join(","), t.timestamp() + 600);
                o.questions = qs.into_iter().map(|(_, q)| q).collect();
            }
        }
        out.push(o);
    }
    (out, !session.data.pending)
}

/// What the page says besides its offers.
#[derive(Default)]
pub(super) struct Shown {
    pub(super) error: Option<String>,
    pub(super) notice: Option<String>,
    pub(super) status: Option<StatusCode>,
    /// Sign-in is paused (the forms are disabled until then).
    pub(super) paused: Option<crate::portal::Paused>,
    /// The kind of the form the person just used (its field gets the focus and the error,
    /// and "Try another way" stays open when it is one of the other ways).
    pub(super) tried: Option<&'static str>,
}

/// The offers as the page lays them out: the strongest first and alone; the others behind
/// "Try another way"; recovery codes last, apart, as the way for emergencies.
#[derive(Serialize)]
struct Layout<'a> {
    primary: Option<&'a Offer>,
    others: Vec<&'a Offer>,
    emergency: Option<&'a Offer>,
    /// Which form's field has the focus.
    focus: Option<&'static str>,
    /// Whether "Try another way" is open (the form just used is in it).
    open: bool,
}

/// The offers laid out, the form just `tried` keeping the focus.
fn layout<'a>(offers: &'a [Offer], tried: Option<&'static str>) -> Layout<'a> {
    let recovery = FactorKind::RecoveryCodes.as_str();
    let (primary, rest) = match offers.split_first() {
        Some((p, rest)) => (Some(p), rest),
        None => (None, &[][..]),
    };
    let others: Vec<&Offer> = rest.iter().filter(|o| o.kind != recovery).collect();
    let emergency = rest.iter().find(|o| o.kind == recovery);
    let focus = tried
        .filter(|t| offers.iter().any(|o| o.kind == *t))
        .or(primary.map(|p| p.kind));
    let open = focus.is_some_and(|f| primary.is_none_or(|p| p.kind != f));
    Layout {
        primary,
        others,
        emergency,
        focus,
        open,
    }
}

/// The page for `on`, saying `shown`.
pub(super) async fn render(st: &Shared, rt: &Here, on: Page<'_>, shown: Shown) -> Response {
    let (offers, can_enrol) = offers(st, on.user, on.session, &on.step.req, rt).await;
    let ways = layout(&offers, shown.tried);
    let upstream = crate::portal::upstream::step_up_offers(
        st,
        rt,
        on.session,
        on.user,
        &on.step.req,
        on.token,
    )
    .await;
    let form_redirect = crate::oidc::authorize::form_action_origin(rt, &on.step.rt);
    let page = Pages::global().render(
        shown.status.unwrap_or(StatusCode::OK),
        "step_up.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&on.session.id),
            username => (!on.session.data.pending).then_some(&on.user.username),
            reason => on.step.why, token => on.token, offers => offers, error => shown.error,
            notice => shown.notice, sign_in => on.step.sign_in, can_enrol => can_enrol,
            needs_passkey => needs_passkey(&on.step.req), help => rt.config.portal.help.as_deref(),
            upstream => upstream, ways => ways,
            signing_in_as => on.session.data.pending.then_some(&on.user.username),
            paused => shown.paused,
            request_id => on.step.rid,
        },
    );
    crate::app::responses::allow_form_redirect_to(page, form_redirect.as_deref())
}

/// Whether only a passkey or security key can meet `req`.
fn needs_passkey(req: &StepUpRequirement) -> bool {
    let f = &req.factors;
    req.phishing_resistant
        || (!f.is_empty() && f.iter().all(|k| k == FactorKind::Webauthn.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(kind: FactorKind) -> Offer {
        Offer {
            kind: kind.as_str(),
            title: factor_title(kind.as_str()),
            questions: Vec::new(),
            asked: String::new(),
        }
    }

    #[test]
    fn the_strongest_way_comes_first_and_recovery_codes_apart() {
        use FactorKind::*;
        let offers = [
            offer(Webauthn),
            offer(Totp),
            offer(EmailOtp),
            offer(RecoveryCodes),
        ];
        let l = layout(&offers, None);
        assert_eq!(l.primary.map(|o| o.kind), Some("webauthn"));
        let others: Vec<_> = l.others.iter().map(|o| o.kind).collect();
        assert_eq!(others, ["totp", "email_otp"]);
        assert_eq!(l.emergency.map(|o| o.kind), Some("recovery_codes"));
        assert_eq!((l.focus, l.open), (Some("webauthn"), false));
        // The way just tried keeps the focus and its section open.
        let l = layout(&offers, Some("recovery_codes"));
        assert_eq!((l.focus, l.open), (Some("recovery_codes"), true));
        let l = layout(&offers, Some("webauthn"));
        assert_eq!((l.focus, l.open), (Some("webauthn"), false));
        // A kind the page does not offer (a forged form) moves nothing.
        let l = layout(&offers, Some("security_questions"));
        assert_eq!((l.focus, l.open), (Some("webauthn"), false));
        // Recovery codes alone are the one way, not an emergency beside nothing.
        let only = [offer(RecoveryCodes)];
        let l = layout(&only, None);
        assert_eq!(l.primary.map(|o| o.kind), Some("recovery_codes"));
        assert!(l.emergency.is_none() && l.others.is_empty());
        assert!(layout(&[], None).primary.is_none());
    }
}
