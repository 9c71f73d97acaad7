//! Assurance: from the factors a session has passed (and when), the NIST SP 800-63B
//! authenticator assurance level (AAL 1–3), the RFC 8176 `amr` list, and whether a
//! phishing-resistant factor is among them; and whether a session meets a step-up
//! requirement, and if not, which of the user's factors would.
//!
//! Pure functions over plain data: no I/O, no clock (the caller passes `now`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stepgate_policy::HumanDuration;

use crate::factor::{AuthenticatorClass, FactorKind};

/// How one factor counts toward assurance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FactorAssurance {
    /// RFC 8176 `amr` value recorded when the factor is passed.
    pub amr: String,
    /// Knowledge, possession or inherence.
    pub class: AuthenticatorClass,
    /// Resists phishing (verifier-impersonation resistance, NIST §5.2.5).
    pub phishing_resistant: bool,
    /// Counts toward the AAL at all (NIST does not recognise KBA or e-mail OTP).
    pub counts_toward_aal: bool,
    /// NIST "restricted" authenticator (SMS/PSTN, §5.1.3.3).
    pub restricted: bool,
    /// Counts as two factors alone when user verification was performed (multi-factor
    /// cryptographic authenticator: a passkey unlocked by PIN or biometric).
    pub multi_factor: bool,
}

impl FactorAssurance {
    /// NIST SP 800-63B-strict defaults for a factor kind (see docs/assurance.md).
    pub fn nist_default(kind: FactorKind) -> Self {
        let (amr, t) = nist(kind);
        FactorAssurance {
            amr: amr.into(),
            class: t.class,
            phishing_resistant: t.phishing_resistant,
            counts_toward_aal: t.counts_toward_aal,
            restricted: t.restricted,
            multi_factor: t.multi_factor,
        }
    }
}

/// A factor kind's effective mapping without its `amr`: what assessing factors needs, with
/// no allocation (the assessment runs on every proxied request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FactorTraits {
    class: AuthenticatorClass,
    phishing_resistant: bool,
    counts_toward_aal: bool,
    restricted: bool,
    multi_factor: bool,
}

impl FactorTraits {
    /// Whether such a factor counts toward the level under `cfg` (a restricted one only
    /// when `allow_restricted`).
    fn counts(&self, cfg: &AssuranceConfig) -> bool {
        self.counts_toward_aal && (!self.restricted || cfg.allow_restricted)
    }
}

/// The NIST SP 800-63B-strict `amr` and traits of a factor kind.
fn nist(kind: FactorKind) -> (&'static str, FactorTraits) {
    let (amr, class, pr, counts, restricted, mf) = match kind {
        FactorKind::Password => (
            "pwd",
            AuthenticatorClass::Knowledge,
            false,
            true,
            false,
            false,
        ),
        FactorKind::SecurityQuestions => (
            "kba",
            AuthenticatorClass::Knowledge,
            false,
            false,
            false,
            false,
        ),
        FactorKind::Totp => (
            "otp",
            AuthenticatorClass::Possession,
            false,
            true,
            false,
            false,
        ),
        FactorKind::EmailOtp => (
            "otp",
            AuthenticatorClass::Possession,
            false,
            false,
            false,
            false,
        ),
        FactorKind::SmsOtp => (
            "sms",
            AuthenticatorClass::Possession,
            false,
            true,
            true,
            false,
        ),
        FactorKind::RecoveryCodes => (
            "otp",
            AuthenticatorClass::Possession,
            false,
            true,
            false,
            false,
        ),
        FactorKind::Webauthn => (
            "hwk",
            AuthenticatorClass::Possession,
            true,
            true,
            false,
            true,
        ),
        // What the upstream verified counts as the trust mapping says: the class and
        // phishing resistance are each passed factor's own (`PassedFactor::class`,
        // `phishing_resistant`), set only from a provider's trusted `amr`/`acr`.
        FactorKind::Upstream => (
            "fed",
            AuthenticatorClass::Knowledge,
            true,
            true,
            false,
            false,
        ),
    };
    (
        amr,
        FactorTraits {
            class,
            phishing_resistant: pr,
            counts_toward_aal: counts,
            restricted,
            multi_factor: mf,
        },
    )
}

/// Overrides for one factor's defaults under `assurance.factors.<kind>`; unset keys keep
/// the NIST default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FactorAssuranceOverride {
    /// RFC 8176 `amr` value.
    pub amr: Option<String>,
    /// `knowledge`, `possession` or `inherence`.
    pub class: Option<AuthenticatorClass>,
    /// Whether it is phishing-resistant.
    pub phishing_resistant: Option<bool>,
    /// Whether it counts toward the AAL.
    pub counts_toward_aal: Option<bool>,
    /// Whether it is a NIST restricted authenticator.
    pub restricted: Option<bool>,
    /// Whether it alone is multi-factor when user verification was performed.
    pub multi_factor: Option<bool>,
}

/// No override: every default kept.
static NO_OVERRIDE: FactorAssuranceOverride = FactorAssuranceOverride {
    amr: None,
    class: None,
    phishing_resistant: None,
    counts_toward_aal: None,
    restricted: None,
    multi_factor: None,
};

/// Per-factor overrides, one optional entry per factor kind.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FactorAssuranceOverrides {
    /// Password.
    pub password: FactorAssuranceOverride,
    /// Security questions.
    pub security_questions: FactorAssuranceOverride,
    /// TOTP.
    pub totp: FactorAssuranceOverride,
    /// E-mail OTP.
    pub email_otp: FactorAssuranceOverride,
    /// SMS OTP.
    pub sms_otp: FactorAssuranceOverride,
    /// Recovery codes.
    pub recovery_codes: FactorAssuranceOverride,
    /// WebAuthn.
    pub webauthn: FactorAssuranceOverride,
}

/// `assurance:` — how factors map to AAL and `amr`; NIST-strict by default.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AssuranceConfig {
    /// Per-factor overrides of the NIST defaults.
    pub factors: FactorAssuranceOverrides,
    /// Whether restricted authenticators (SMS) may count toward AAL2 (default true, as NIST
    /// allows with notice to the user; set false to stop SMS raising the level).
    pub allow_restricted: bool,
    /// For `max_age: every_time`, how recent "this very request" is (default `60s`: the
    /// time between passing the challenge and replaying the request).
    pub every_time_window: HumanDuration,
    /// Opt-in, NOT NIST SP 800-63B-compliant: an e-mail code counts toward the level, so a
    /// password and an e-mail code reach AAL2 (default false; e-mail codes can always be
    /// asked for by name, `factors: [email_otp]`, without counting). `stepgate check` warns.
    /// `factors.email_otp.counts_toward_aal`, when set, wins.
    pub count_email_otp_as_mfa: bool,
}

impl Default for AssuranceConfig {
    fn default() -> Self {
        AssuranceConfig {
            factors: FactorAssuranceOverrides::default(),
            allow_restricted: true,
            every_time_window: HumanDuration::from_secs(60),
            count_email_otp_as_mfa: false,
        }
    }
}

impl AssuranceConfig {
    /// The effective mapping for a factor kind.
    pub fn factor(&self, kind: FactorKind) -> FactorAssurance {
        let t = self.traits(kind);
        FactorAssurance {
            amr: self
                .overrides(kind)
                .amr
                .clone()
                .unwrap_or_else(|| nist(kind).0.into()),
            class: t.class,
            phishing_resistant: t.phishing_resistant,
            counts_toward_aal: t.counts_toward_aal,
            restricted: t.restricted,
            multi_factor: t.multi_factor,
        }
    }

    fn overrides(&self, kind: FactorKind) -> &FactorAssuranceOverride {
        match kind {
            FactorKind::Password => &self.factors.password,
            FactorKind::SecurityQuestions => &self.factors.security_questions,
            FactorKind::Totp => &self.factors.totp,
            FactorKind::EmailOtp => &self.factors.email_otp,
            FactorKind::SmsOtp => &self.factors.sms_otp,
            FactorKind::RecoveryCodes => &self.factors.recovery_codes,
            FactorKind::Webauthn => &self.factors.webauthn,
            // Configured per identity provider (`identity_providers[].trust`), not here.
            FactorKind::Upstream => &NO_OVERRIDE,
        }
    }

    /// [`Self::factor`] without the `amr`.
    fn traits(&self, kind: FactorKind) -> FactorTraits {
        let (o, mut d) = (self.overrides(kind), nist(kind).1);
        if kind == FactorKind::EmailOtp && self.count_email_otp_as_mfa {
            d.counts_toward_aal = true;
        }
        FactorTraits {
            class: o.class.unwrap_or(d.class),
            phishing_resistant: o.phishing_resistant.unwrap_or(d.phishing_resistant),
            counts_toward_aal: o.counts_toward_aal.unwrap_or(d.counts_toward_aal),
            restricted: o.restricted.unwrap_or(d.restricted),
            multi_factor: o.multi_factor.unwrap_or(d.multi_factor),
        }
    }

    /// What `stepgate check` should warn about: mappings weaker than NIST SP 800-63B
    /// that an admin opted into.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.traits(FactorKind::EmailOtp).counts_toward_aal {
            let how = if self.count_email_otp_as_mfa {
                "assurance.count_email_otp_as_mfa"
            } else {
                "assurance.factors.email_otp.counts_toward_aal"
            };
            w.push(format!("{how}: e-mail codes count toward AAL2, which NIST SP 800-63B does not allow (e-mail is not an out-of-band authenticator); to ask for them without counting, name them in the step-up (`factors: [email_otp]`)"));
        }
        if self.traits(FactorKind::SecurityQuestions).counts_toward_aal {
            w.push("assurance.factors.security_questions.counts_toward_aal: security questions count toward AAL2, which NIST SP 800-63B does not allow".to_string());
        }
        w
    }

    /// Whether a factor of this kind counts toward the level under this configuration.
    fn counts(&self, kind: FactorKind) -> bool {
        self.traits(kind).counts(self)
    }

    /// Checks the overrides.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        for kind in FactorKind::ALL {
            let f = self.factor(kind);
            if f.amr.is_empty()
                || !f
                    .amr
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(crate::config::ConfigError::new(
                    &format!("assurance.factors.{kind}.amr"),
                    format!("`{}` is not an amr value; use a registered RFC 8176 value such as pwd, otp, sms, hwk", f.amr),
                ));
            }
        }
        Ok(())
    }
}

/// A factor the session has passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassedFactor {
    /// Which kind.
    pub kind: FactorKind,
    /// The `amr` value recorded when it was passed.
    pub amr: String,
    /// When it was passed.
    pub at: DateTime<Utc>,
    /// Whether this verification was phishing-resistant.
    pub phishing_resistant: bool,
    /// Whether the authenticator is hardware-bound (attested WebAuthn credential).
    pub hardware_bound: bool,
    /// Whether the authenticator verified the user (PIN/biometric) — WebAuthn UV flag.
    pub user_verified: bool,
    /// The factor record's id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_id: Option<String>,
    /// For an upstream factor ([`FactorKind::Upstream`]): the class its provider's trust
    /// mapping gave it (none: knowledge, the upstream sign-in alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<AuthenticatorClass>,
}

impl PassedFactor {
    /// A factor passed at `at`, with amr and phishing resistance from the mapping.
    pub fn new(kind: FactorKind, cfg: &AssuranceConfig, at: DateTime<Utc>) -> Self {
        let fa = cfg.factor(kind);
        PassedFactor {
            kind,
            amr: fa.amr,
            at,
            phishing_resistant: fa.phishing_resistant,
            hardware_bound: false,
            user_verified: false,
            factor_id: None,
            class: None,
        }
    }

    /// A factor an upstream identity provider verified at `at`, recorded under its `amr`
    /// value, counting as `class` (phishing-resistant or hardware-bound only when the
    /// provider's trust mapping says so).
    pub fn upstream(
        amr: &str,
        class: AuthenticatorClass,
        phishing_resistant: bool,
        hardware_bound: bool,
        at: DateTime<Utc>,
    ) -> Self {
        PassedFactor {
            kind: FactorKind::Upstream,
            amr: amr.to_string(),
            at,
            phishing_resistant,
            hardware_bound,
            user_verified: false,
            factor_id: None,
            class: Some(class),
        }
    }

    /// A WebAuthn assertion: records user verification and whether the credential is
    /// hardware-bound (`amr` becomes `swk` for a credential that is not).
    pub fn webauthn(
        cfg: &AssuranceConfig,
        at: DateTime<Utc>,
        user_verified: bool,
        hardware_bound: bool,
    ) -> Self {
        let mut f = Self::new(FactorKind::Webauthn, cfg, at);
        f.user_verified = user_verified;
        f.hardware_bound = hardware_bound;
        if !hardware_bound && f.amr == "hwk" {
            f.amr = "swk".into();
        }
        f
    }
}

/// What a session has passed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    /// Factors passed, in order.
    pub factors: Vec<PassedFactor>,
}

/// The assurance a set of factors reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assurance {
    /// NIST AAL: 0 (none), 1, 2 or 3.
    pub aal: u8,
    /// RFC 8176 `amr` values, in the order first passed, plus `mfa` when multi-factor.
    pub amr: Vec<String>,
    /// A phishing-resistant factor is among them.
    pub phishing_resistant: bool,
    /// A hardware-bound authenticator is among them.
    pub hardware_bound: bool,
    /// A restricted authenticator (SMS) contributed to the level.
    pub restricted: bool,
    /// Time of the most recent factor (OIDC `auth_time`).
    pub auth_time: Option<DateTime<Utc>>,
}

struct Effective<'a> {
    passed: &'a PassedFactor,
    map: FactorTraits,
}

impl Effective<'_> {
    fn counts(&self, cfg: &AssuranceConfig) -> bool {
        self.map.counts(cfg)
    }
    fn phishing_resistant(&self) -> bool {
        self.map.phishing_resistant && self.passed.phishing_resistant
    }
    fn multi_factor(&self) -> bool {
        self.map.multi_factor && self.passed.user_verified
    }
}

/// The authentication method reference values registered by RFC 8176 §2 (IANA's
/// "Authentication Method Reference Values" registry).
pub const RFC8176_AMR: [&str; 21] = [
    "face", "fpt", "geo", "hwk", "iris", "kba", "mca", "mfa", "otp", "pin", "pop", "pwd", "rba",
    "retina", "sc", "sms", "swk", "tel", "user", "vbm", "wia",
];

/// Computes the assurance of a set of passed factors.
pub fn assess_factors(factors: &[PassedFactor], cfg: &AssuranceConfig) -> Assurance {
    let level = level(factors, cfg);
    let mut amr: Vec<String> = Vec::with_capacity(factors.len() + usize::from(level.mfa));
    for p in factors {
        // What an upstream provider did is named only by a registered method: RFC 8176
        // has none for "signed in elsewhere, how unknown", so an untrusted upstream
        // sign-in (and a trusted value outside the registry) adds no method.
        if p.kind == FactorKind::Upstream && !RFC8176_AMR.contains(&p.amr.as_str()) {
            continue;
        }
        if !amr.contains(&p.amr) {
            amr.push(p.amr.clone());
        }
    }
    if level.mfa {
        amr.push("mfa".into());
    }
    Assurance {
        aal: level.aal,
        amr,
        phishing_resistant: level.phishing_resistant,
        hardware_bound: factors.iter().any(|f| f.hardware_bound),
        restricted: level.aal >= 2 && level.restricted,
        auth_time: factors.iter().map(|f| f.at).max(),
    }
}

/// The AAL a set of passed factors reaches: [`assess_factors`]'s `aal`, without the rest
/// (session lifetime limits need only this).
pub fn aal_of(factors: &[PassedFactor], cfg: &AssuranceConfig) -> u8 {
    level(factors, cfg).aal
}

/// What [`assess_factors`] derives from the factors' traits.
struct Level {
    aal: u8,
    mfa: bool,
    /// Some factor is phishing-resistant (eligible or not).
    phishing_resistant: bool,
    /// Some eligible factor is a restricted authenticator.
    restricted: bool,
}

/// A passed factor with its kind's traits under `cfg`; an upstream factor counts as the
/// class its provider's trust mapping gave it.
fn effective<'a>(p: &'a PassedFactor, cfg: &AssuranceConfig) -> Effective<'a> {
    let mut map = cfg.traits(p.kind);
    if let Some(class) = p.class.filter(|_| p.kind == FactorKind::Upstream) {
        map.class = class;
    }
    Effective { passed: p, map }
}

fn level(factors: &[PassedFactor], cfg: &AssuranceConfig) -> Level {
    let effective = |p| effective(p, cfg);
    let class_bit = |c: AuthenticatorClass| 1u8 << (c as u8);
    // The classes of the eligible factors, one bit each.
    let (mut classes, mut mf_device, mut eligible, mut pr, mut restricted) =
        (0u8, false, false, false, false);
    for e in factors.iter().map(effective) {
        pr |= e.phishing_resistant();
        if e.counts(cfg) {
            eligible = true;
            classes |= class_bit(e.map.class);
            mf_device |= e.multi_factor();
            restricted |= e.map.restricted;
        }
    }
    let mfa = mf_device || classes.count_ones() >= 2;
    // AAL3: multi-factor, with a hardware-bound, phishing-resistant authenticator that is
    // either multi-factor itself or combined with a factor of another class.
    let aal3 = mfa
        && factors.iter().map(effective).any(|e| {
            e.counts(cfg)
                && e.passed.hardware_bound
                && e.phishing_resistant()
                && (e.multi_factor() || classes & !class_bit(e.map.class) != 0)
        });
    let aal = if aal3 {
        3
    } else if mfa {
        2
    } else if eligible {
        1
    } else {
        0
    };
    Level {
        aal,
        mfa,
        phishing_resistant: pr,
        restricted,
    }
}

/// Computes the assurance a session has reached. `now` is accepted for symmetry with
/// [`satisfies`]; session lifetime limits are the session layer's job.
pub fn assess(state: &AuthState, cfg: &AssuranceConfig, _now: DateTime<Utc>) -> Assurance {
    assess_factors(&state.factors, cfg)
}

pub use stepgate_policy::{MaxAge, StepUpRequirement};

/// One unmet part of a requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "unmet", rename_all = "snake_case")]
pub enum Unmet {
    /// The level is too low.
    Aal {
        /// Reached.
        reached: u8,
        /// Required.
        required: u8,
    },
    /// None of the acceptable factors was passed (recently enough).
    Factor {
        /// The acceptable factors.
        accepted: Vec<String>,
    },
    /// No phishing-resistant factor (recently enough).
    PhishingResistant,
    /// No hardware-bound authenticator (recently enough).
    HardwareBound,
    /// Nothing counting toward the level was passed within `max_age`.
    Freshness {
        /// The maximum age asked for.
        max_age: String,
    },
}

impl std::fmt::Display for Unmet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unmet::Aal { reached, required } => write!(
                f,
                "assurance level AAL{required} is required (session has AAL{reached})"
            ),
            Unmet::Factor { accepted } => write!(
                f,
                "one of these factors is required: {}",
                accepted.join(", ")
            ),
            Unmet::PhishingResistant => {
                f.write_str("a phishing-resistant factor (passkey or security key) is required")
            }
            Unmet::HardwareBound => f.write_str("a hardware-bound security key is required"),
            Unmet::Freshness { max_age } => {
                write!(f, "a factor passed within the last {max_age} is required")
            }
        }
    }
}

/// An enrolled factor as far as step-up candidates are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrolledFactor {
    /// Its kind.
    pub kind: FactorKind,
    /// Hardware-bound (attested WebAuthn credential).
    pub hardware_bound: bool,
    /// Performs user verification (WebAuthn passkey with UV).
    pub user_verifying: bool,
}

impl From<FactorKind> for EnrolledFactor {
    fn from(kind: FactorKind) -> Self {
        EnrolledFactor {
            kind,
            hardware_bound: false,
            user_verifying: kind == FactorKind::Webauthn,
        }
    }
}

/// The answer to "does this session meet the requirement?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Satisfaction {
    /// Whether it does.
    pub satisfied: bool,
    /// What is missing (empty when satisfied).
    pub missing: Vec<Unmet>,
    /// Enrolled factors that would satisfy it: each entry is a set to pass now (one
    /// factor where one is enough, otherwise pairs). Empty when satisfied or impossible.
    pub candidates: Vec<Vec<FactorKind>>,
    /// The session's assurance as it stands.
    pub assurance: Assurance,
}

fn is_fresh(
    f: &PassedFactor,
    max_age: Option<MaxAge>,
    cfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> bool {
    let window = match max_age {
        None => return true,
        Some(MaxAge::Within(d)) => d,
        Some(MaxAge::EveryTime) => cfg.every_time_window,
    };
    let age = now.signed_duration_since(f.at);
    age.num_seconds() <= window.as_secs() as i64
}

/// Whether `factors` meet `req` at `now`: the first half of [`satisfies`], without working
/// out what would close a gap (the per-request check of the gateway).
pub fn meets(
    factors: &[PassedFactor],
    req: &StepUpRequirement,
    cfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> bool {
    unmet(factors, &assess_factors(factors, cfg), req, cfg, now).is_empty()
}

/// [`meets`] for a caller that already assessed the factors: `assessed` is
/// `assess_factors(factors, cfg)` (the gateway needs it for the identity it asserts too, and
/// assesses once per request).
pub fn meets_assessed(
    factors: &[PassedFactor],
    assessed: &Assurance,
    req: &StepUpRequirement,
    cfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> bool {
    unmet(factors, assessed, req, cfg, now).is_empty()
}

/// What `factors` (assessed as `all`) lack for `req` at `now`.
fn unmet(
    factors: &[PassedFactor],
    all: &Assurance,
    req: &StepUpRequirement,
    cfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> Vec<Unmet> {
    let mut out = Vec::new();
    let fresh: Vec<&PassedFactor> = factors
        .iter()
        .filter(|f| is_fresh(f, req.max_age, cfg, now))
        .collect();
    if let Some(required) = req.min_aal {
        if all.aal < required {
            out.push(Unmet::Aal {
                reached: all.aal,
                required,
            });
        }
    }
    if !req.factors.is_empty()
        && !fresh.iter().any(|f| {
            req.factors
                .iter()
                // An upstream factor answers to its kind's name only: the upstream's `otp`
                // is not stepgate's `totp`.
                .any(|a| a == f.kind.as_str() || (f.kind != FactorKind::Upstream && *a == f.amr))
        })
    {
        out.push(Unmet::Factor {
            accepted: req.factors.clone(),
        });
    }
    let pr = |f: &PassedFactor| f.phishing_resistant && cfg.traits(f.kind).phishing_resistant;
    if req.phishing_resistant
        && !fresh
            .iter()
            .any(|f| pr(f) && (!req.hardware_bound || f.hardware_bound))
    {
        out.push(Unmet::PhishingResistant);
    }
    if req.hardware_bound
        && !fresh
            .iter()
            .any(|f| f.hardware_bound && (!req.phishing_resistant || pr(f)))
    {
        out.push(Unmet::HardwareBound);
    }
    // Freshness of the level itself: something counting toward the level must be recent.
    if let Some(max_age) = req.max_age {
        let counts = |f: &&PassedFactor| cfg.counts(f.kind);
        if req.min_aal.is_some() && !fresh.iter().any(counts) {
            out.push(Unmet::Freshness {
                max_age: match max_age {
                    MaxAge::Within(d) => d.to_string(),
                    MaxAge::EveryTime => "request (every time)".into(),
                },
            });
        }
        if req.min_aal.is_none()
            && req.factors.is_empty()
            && !req.phishing_resistant
            && !req.hardware_bound
            && fresh.is_empty()
        {
            out.push(Unmet::Freshness {
                max_age: match max_age {
                    MaxAge::Within(d) => d.to_string(),
                    MaxAge::EveryTime => "request (every time)".into(),
                },
            });
        }
    }
    out
}

/// Answers "does this session satisfy this step-up requirement, and if not, which of the
/// user's enrolled factors would".
///
/// Semantics: the level (`min_aal`) is computed over all the session's factors; a
/// `max_age` then requires that at least one factor counting toward the level was passed
/// within it (NIST-style reauthentication with one factor inside an AAL2 session), and
/// the named-factor, phishing-resistance and hardware-bound conditions must each be met
/// by a factor passed within it.
pub fn satisfies(
    state: &AuthState,
    req: &StepUpRequirement,
    cfg: &AssuranceConfig,
    enrolled: &[EnrolledFactor],
    now: DateTime<Utc>,
) -> Satisfaction {
    let assurance = assess_factors(&state.factors, cfg);
    let missing = unmet(&state.factors, &assurance, req, cfg, now);
    if missing.is_empty() {
        return Satisfaction {
            satisfied: true,
            missing,
            candidates: Vec::new(),
            assurance,
        };
    }
    let passed_now = |e: &EnrolledFactor| {
        if e.kind == FactorKind::Webauthn {
            PassedFactor::webauthn(cfg, now, e.user_verifying, e.hardware_bound)
        } else {
            PassedFactor::new(e.kind, cfg, now)
        }
    };
    let mut uniq: Vec<EnrolledFactor> = Vec::new();
    for e in enrolled {
        if !uniq.contains(e) {
            uniq.push(*e);
        }
    }
    let works = |extra: &[&EnrolledFactor]| {
        let mut fs = state.factors.clone();
        fs.extend(extra.iter().map(|e| passed_now(e)));
        unmet(&fs, &assess_factors(&fs, cfg), req, cfg, now).is_empty()
    };
    let mut candidates: Vec<Vec<FactorKind>> = Vec::new();
    let push = |candidates: &mut Vec<Vec<FactorKind>>, c: Vec<FactorKind>| {
        if !candidates.contains(&c) {
            candidates.push(c);
        }
    };
    for e in &uniq {
        if works(&[e]) {
            push(&mut candidates, vec![e.kind]);
        }
    }
    if candidates.is_empty() {
        for (i, a) in uniq.iter().enumerate() {
            for b in &uniq[i + 1..] {
                if a.kind != b.kind && works(&[a, b]) {
                    let mut pair = vec![a.kind, b.kind];
                    pair.sort();
                    push(&mut candidates, pair);
                }
            }
        }
    }
    Satisfaction {
        satisfied: false,
        missing,
        candidates,
        assurance,
    }
}

#[cfg(test)]
mod tests;
