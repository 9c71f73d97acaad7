use super::*;
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

/// The factor variants the mapping distinguishes (WebAuthn by UV and hardware binding).
const VARIANTS: [&str; 10] = [
    "pwd", "kba", "totp", "mail", "sms", "rc", "pk", "pkhw", "sk", "sksw",
];

fn passed(v: &str, cfg: &AssuranceConfig, at: DateTime<Utc>) -> PassedFactor {
    match v {
        "pwd" => PassedFactor::new(FactorKind::Password, cfg, at),
        "kba" => PassedFactor::new(FactorKind::SecurityQuestions, cfg, at),
        "totp" => PassedFactor::new(FactorKind::Totp, cfg, at),
        "mail" => PassedFactor::new(FactorKind::EmailOtp, cfg, at),
        "sms" => PassedFactor::new(FactorKind::SmsOtp, cfg, at),
        "rc" => PassedFactor::new(FactorKind::RecoveryCodes, cfg, at),
        // passkey: user verified, not attested (possibly synced)
        "pk" => PassedFactor::webauthn(cfg, at, true, false),
        // attested hardware passkey with PIN/biometric
        "pkhw" => PassedFactor::webauthn(cfg, at, true, true),
        // attested security key, touch only
        "sk" => PassedFactor::webauthn(cfg, at, false, true),
        // unattested security key, touch only
        "sksw" => PassedFactor::webauthn(cfg, at, false, false),
        _ => unreachable!(),
    }
}

fn aal_of(vs: &[&str], cfg: &AssuranceConfig) -> u8 {
    let fs: Vec<PassedFactor> = vs.iter().map(|v| passed(v, cfg, t0())).collect();
    assess_factors(&fs, cfg).aal
}

/// Every single factor and every pair of factors under the NIST defaults.
#[test]
fn aal_table_every_single_and_pair() {
    let cfg = AssuranceConfig::default();
    let singles: [(&str, u8); 10] = [
        ("pwd", 1),
        ("kba", 0), // KBA is not a NIST authenticator
        ("totp", 1),
        ("mail", 0), // e-mail is not an allowed out-of-band channel
        ("sms", 1),
        ("rc", 1),
        ("pk", 2),   // multi-factor cryptographic authenticator (UV)
        ("pkhw", 3), // multi-factor hardware cryptographic authenticator
        ("sk", 1),   // single-factor cryptographic device
        ("sksw", 1),
    ];
    for (v, want) in singles {
        assert_eq!(aal_of(&[v], &cfg), want, "single {v}");
    }
    let pairs: [(&str, &str, u8); 45] = [
        ("pwd", "kba", 1),
        ("pwd", "totp", 2),
        ("pwd", "mail", 1),
        ("pwd", "sms", 2),
        ("pwd", "rc", 2),
        ("pwd", "pk", 2),
        ("pwd", "pkhw", 3),
        ("pwd", "sk", 3),
        ("pwd", "sksw", 2),
        ("kba", "totp", 1),
        ("kba", "mail", 0),
        ("kba", "sms", 1),
        ("kba", "rc", 1),
        ("kba", "pk", 2),
        ("kba", "pkhw", 3),
        ("kba", "sk", 1),
        ("kba", "sksw", 1),
        ("totp", "mail", 1),
        ("totp", "sms", 1),
        ("totp", "rc", 1),
        ("totp", "pk", 2),
        ("totp", "pkhw", 3),
        ("totp", "sk", 1),
        ("totp", "sksw", 1),
        ("mail", "sms", 1),
        ("mail", "rc", 1),
        ("mail", "pk", 2),
        ("mail", "pkhw", 3),
        ("mail", "sk", 1),
        ("mail", "sksw", 1),
        ("sms", "rc", 1),
        ("sms", "pk", 2),
        ("sms", "pkhw", 3),
        ("sms", "sk", 1),
        ("sms", "sksw", 1),
        ("rc", "pk", 2),
        ("rc", "pkhw", 3),
        ("rc", "sk", 1),
        ("rc", "sksw", 1),
        ("pk", "pkhw", 3),
        ("pk", "sk", 2),
        ("pk", "sksw", 2),
        ("pkhw", "sk", 3),
        ("pkhw", "sksw", 3),
        ("sk", "sksw", 1),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (a, b, want) in pairs {
        assert_eq!(aal_of(&[a, b], &cfg), want, "{a} + {b}");
        assert_eq!(aal_of(&[b, a], &cfg), want, "{b} + {a}");
        seen.insert((a, b));
    }
    // The table covers every unordered pair of distinct variants.
    for (i, a) in VARIANTS.iter().enumerate() {
        for b in &VARIANTS[i + 1..] {
            assert!(
                seen.contains(&(*a, *b)),
                "pair {a} + {b} missing from the table"
            );
        }
    }
}

/// Adding a factor never lowers the level (all 1024 subsets).
#[test]
fn aal_is_monotonic_over_all_subsets() {
    let cfg = AssuranceConfig::default();
    for mask in 0u32..(1 << VARIANTS.len()) {
        let set: Vec<&str> = (0..VARIANTS.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| VARIANTS[i])
            .collect();
        let base = aal_of(&set, &cfg);
        for extra in VARIANTS {
            let mut more = set.clone();
            more.push(extra);
            assert!(aal_of(&more, &cfg) >= base, "{set:?} + {extra}");
        }
    }
}

#[test]
fn amr_and_flags() {
    let cfg = AssuranceConfig::default();
    let fs = vec![
        passed("pwd", &cfg, t0()),
        passed("totp", &cfg, t0() + chrono::Duration::seconds(5)),
    ];
    let a = assess_factors(&fs, &cfg);
    assert_eq!(a.amr, vec!["pwd", "otp", "mfa"]);
    assert!(!a.phishing_resistant);
    assert_eq!(a.auth_time, Some(t0() + chrono::Duration::seconds(5)));

    let a = assess_factors(&[passed("pk", &cfg, t0())], &cfg);
    assert_eq!(a.amr, vec!["swk", "mfa"]);
    assert!(a.phishing_resistant && !a.hardware_bound);

    let a = assess_factors(&[passed("pwd", &cfg, t0()), passed("sk", &cfg, t0())], &cfg);
    assert_eq!(a.amr, vec!["pwd", "hwk", "mfa"]);
    assert!(a.phishing_resistant && a.hardware_bound);

    let a = assess_factors(
        &[passed("pwd", &cfg, t0()), passed("sms", &cfg, t0())],
        &cfg,
    );
    assert_eq!(a.amr, vec!["pwd", "sms", "mfa"]);
    assert!(a.restricted);

    let empty = assess(&AuthState::default(), &cfg, t0());
    assert_eq!((empty.aal, empty.amr.len(), empty.auth_time), (0, 0, None));
}

#[test]
fn configurable_mapping() {
    let cfg: AssuranceConfig = marked_yaml::from_yaml(
        0,
        "allow_restricted: false\nevery_time_window: 2m\nfactors:\n  email_otp: { counts_toward_aal: true, amr: mail }\n  security_questions: { counts_toward_aal: true }\n",
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(
        aal_of(&["pwd", "sms"], &cfg),
        1,
        "SMS no longer raises the level"
    );
    assert_eq!(aal_of(&["pwd", "mail"], &cfg), 2);
    assert_eq!(aal_of(&["kba"], &cfg), 1);
    assert_eq!(
        aal_of(&["kba", "pwd"], &cfg),
        1,
        "two knowledge factors are still one class"
    );
    let fs = [passed("mail", &cfg, t0())];
    assert_eq!(assess_factors(&fs, &cfg).amr, vec!["mail"]);
    let bad: AssuranceConfig =
        marked_yaml::from_yaml(0, "factors: { totp: { amr: 'One Time' } }").unwrap();
    assert_eq!(
        bad.validate().unwrap_err().key,
        "assurance.factors.totp.amr"
    );
    assert!(marked_yaml::from_yaml::<AssuranceConfig>(0, "factors: { tot: {} }").is_err());
}

fn state(vs: &[(&str, i64)], cfg: &AssuranceConfig) -> AuthState {
    AuthState {
        factors: vs
            .iter()
            .map(|(v, mins_ago)| passed(v, cfg, t0() - chrono::Duration::minutes(*mins_ago)))
            .collect(),
    }
}

fn enrolled(kinds: &[FactorKind]) -> Vec<EnrolledFactor> {
    kinds.iter().map(|k| EnrolledFactor::from(*k)).collect()
}

#[test]
fn step_up_to_aal2_suggests_second_factors() {
    let cfg = AssuranceConfig::default();
    let req = StepUpRequirement {
        min_aal: Some(2),
        ..Default::default()
    };
    let st = state(&[("pwd", 10)], &cfg);
    let en = enrolled(&[
        FactorKind::Password,
        FactorKind::Totp,
        FactorKind::EmailOtp,
        FactorKind::Webauthn,
    ]);
    let s = satisfies(&st, &req, &cfg, &en, t0());
    assert!(!s.satisfied);
    assert_eq!(
        s.missing,
        vec![Unmet::Aal {
            reached: 1,
            required: 2
        }]
    );
    assert_eq!(
        s.candidates,
        vec![vec![FactorKind::Totp], vec![FactorKind::Webauthn]]
    );
    assert!(s.missing[0].to_string().contains("AAL2"));

    let st2 = state(&[("pwd", 10), ("totp", 1)], &cfg);
    let s = satisfies(&st2, &req, &cfg, &en, t0());
    assert!(s.satisfied && s.candidates.is_empty() && s.missing.is_empty());
}

#[test]
fn no_session_needs_pairs() {
    let cfg = AssuranceConfig::default();
    let req = StepUpRequirement {
        min_aal: Some(2),
        ..Default::default()
    };
    let en = enrolled(&[
        FactorKind::Password,
        FactorKind::Totp,
        FactorKind::RecoveryCodes,
    ]);
    let s = satisfies(&AuthState::default(), &req, &cfg, &en, t0());
    assert_eq!(
        s.candidates,
        vec![
            vec![FactorKind::Password, FactorKind::Totp],
            vec![FactorKind::Password, FactorKind::RecoveryCodes]
        ]
    );
}

#[test]
fn phishing_resistant_and_hardware_bound() {
    let cfg = AssuranceConfig::default();
    let pr = StepUpRequirement {
        phishing_resistant: true,
        ..Default::default()
    };
    let st = state(&[("pwd", 1), ("totp", 1)], &cfg);
    let en = vec![
        EnrolledFactor::from(FactorKind::Totp),
        EnrolledFactor {
            kind: FactorKind::Webauthn,
            hardware_bound: true,
            user_verifying: false,
        },
    ];
    let s = satisfies(&st, &pr, &cfg, &en, t0());
    assert_eq!(s.missing, vec![Unmet::PhishingResistant]);
    assert_eq!(s.candidates, vec![vec![FactorKind::Webauthn]]);

    let hw = StepUpRequirement {
        min_aal: Some(3),
        phishing_resistant: true,
        hardware_bound: true,
        ..Default::default()
    };
    // A synced passkey is phishing-resistant but not hardware-bound.
    let st = state(&[("pwd", 1), ("pk", 1)], &cfg);
    let s = satisfies(&st, &hw, &cfg, &enrolled(&[FactorKind::Webauthn]), t0());
    assert!(!s.satisfied);
    assert!(s.missing.contains(&Unmet::HardwareBound));
    assert!(s.missing.contains(&Unmet::Aal {
        reached: 2,
        required: 3
    }));
    assert!(
        s.candidates.is_empty(),
        "a plain passkey cannot satisfy a hardware-bound requirement"
    );
    let st = state(&[("pwd", 1), ("sk", 1)], &cfg);
    assert!(satisfies(&st, &hw, &cfg, &[], t0()).satisfied);
}

#[test]
fn freshness_and_every_time() {
    let cfg = AssuranceConfig::default();
    let fresh15 = StepUpRequirement {
        min_aal: Some(2),
        max_age: Some(MaxAge::Within(HumanDuration::from_secs(900))),
        ..Default::default()
    };
    let en = enrolled(&[FactorKind::Password, FactorKind::Totp]);
    // MFA an hour ago: level reached but not fresh.
    let old = state(&[("pwd", 60), ("totp", 59)], &cfg);
    let s = satisfies(&old, &fresh15, &cfg, &en, t0());
    assert_eq!(
        s.missing,
        vec![Unmet::Freshness {
            max_age: "15m".into()
        }]
    );
    assert_eq!(
        s.candidates,
        vec![vec![FactorKind::Password], vec![FactorKind::Totp]]
    );
    // Re-verified a factor 5 minutes ago within the AAL2 session: fresh.
    let mut re = old.clone();
    re.factors
        .push(passed("totp", &cfg, t0() - chrono::Duration::minutes(5)));
    assert!(satisfies(&re, &fresh15, &cfg, &en, t0()).satisfied);

    let every = StepUpRequirement {
        factors: vec!["webauthn".into(), "otp".into()],
        max_age: Some(MaxAge::EveryTime),
        ..Default::default()
    };
    let s = satisfies(&re, &every, &cfg, &en, t0());
    assert_eq!(
        s.missing,
        vec![Unmet::Factor {
            accepted: every.factors.clone()
        }]
    );
    assert_eq!(s.candidates, vec![vec![FactorKind::Totp]]);
    let mut now_passed = re.clone();
    now_passed
        .factors
        .push(passed("totp", &cfg, t0() - chrono::Duration::seconds(20)));
    assert!(satisfies(&now_passed, &every, &cfg, &en, t0()).satisfied);
    assert!(
        !satisfies(
            &now_passed,
            &every,
            &cfg,
            &en,
            t0() + chrono::Duration::minutes(2)
        )
        .satisfied
    );
}

#[test]
fn acceptable_factors_match_kind_or_amr() {
    let cfg = AssuranceConfig::default();
    let st = state(&[("pwd", 1), ("sms", 1)], &cfg);
    let by_kind = StepUpRequirement {
        factors: vec!["sms_otp".into()],
        ..Default::default()
    };
    let by_amr = StepUpRequirement {
        factors: vec!["sms".into()],
        ..Default::default()
    };
    let other = StepUpRequirement {
        factors: vec!["totp".into()],
        ..Default::default()
    };
    assert!(satisfies(&st, &by_kind, &cfg, &[], t0()).satisfied);
    assert!(satisfies(&st, &by_amr, &cfg, &[], t0()).satisfied);
    let s = satisfies(&st, &other, &cfg, &enrolled(&[FactorKind::SmsOtp]), t0());
    assert!(!s.satisfied && s.candidates.is_empty());
}

/// NIST's rules stated directly over sets, for checking the allocation-free assessment
/// against: the eligible factors' classes, multi-factor by two classes or one
/// multi-factor device, AAL3 by a hardware-bound phishing-resistant eligible factor that is
/// multi-factor or joined by another class.
fn oracle(fs: &[PassedFactor], cfg: &AssuranceConfig) -> Assurance {
    use std::collections::BTreeSet;
    let counts = |f: &PassedFactor| {
        let m = cfg.factor(f.kind);
        m.counts_toward_aal && (!m.restricted || cfg.allow_restricted)
    };
    let mf = |f: &PassedFactor| cfg.factor(f.kind).multi_factor && f.user_verified;
    let pr = |f: &PassedFactor| cfg.factor(f.kind).phishing_resistant && f.phishing_resistant;
    let eligible: Vec<&PassedFactor> = fs.iter().filter(|f| counts(f)).collect();
    let classes: BTreeSet<AuthenticatorClass> =
        eligible.iter().map(|f| cfg.factor(f.kind).class).collect();
    let mfa = eligible.iter().any(|f| mf(f)) || classes.len() >= 2;
    let aal3 = mfa
        && eligible.iter().any(|f| {
            f.hardware_bound
                && pr(f)
                && (mf(f) || classes.iter().any(|c| *c != cfg.factor(f.kind).class))
        });
    let aal = match (aal3, mfa, eligible.is_empty()) {
        (true, _, _) => 3,
        (false, true, _) => 2,
        (false, false, false) => 1,
        (false, false, true) => 0,
    };
    let mut amr: Vec<String> = Vec::new();
    for f in fs {
        if !amr.contains(&f.amr) {
            amr.push(f.amr.clone());
        }
    }
    if mfa {
        amr.push("mfa".into());
    }
    Assurance {
        aal,
        amr,
        phishing_resistant: fs.iter().any(pr),
        hardware_bound: fs.iter().any(|f| f.hardware_bound),
        restricted: aal >= 2 && eligible.iter().any(|f| cfg.factor(f.kind).restricted),
        auth_time: fs.iter().map(|f| f.at).max(),
    }
}

#[test]
fn assessment_agrees_with_the_rules_over_every_subset_and_mapping() {
    let configs = [
        AssuranceConfig::default(),
        marked_yaml::from_yaml(0, "allow_restricted: false").unwrap(),
        marked_yaml::from_yaml(
            0,
            "factors:\n  security_questions: { counts_toward_aal: true, class: possession }\n  webauthn: { multi_factor: false }\n  totp: { phishing_resistant: true, class: inherence }\n",
        )
        .unwrap(),
    ];
    let mut seen = [0usize; 4];
    for cfg in &configs {
        for mask in 0u32..(1 << VARIANTS.len()) {
            let fs: Vec<PassedFactor> = (0..VARIANTS.len())
                .filter(|i| mask & (1 << i) != 0)
                .enumerate()
                .map(|(n, i)| passed(VARIANTS[i], cfg, t0() + chrono::Duration::seconds(n as i64)))
                .collect();
            let got = assess_factors(&fs, cfg);
            assert_eq!(got, oracle(&fs, cfg), "{mask:#b}");
            assert_eq!(super::aal_of(&fs, cfg), got.aal, "{mask:#b}");
            seen[usize::from(got.aal)] += 1;
        }
    }
    assert!(seen.iter().all(|n| *n > 0), "every level reached: {seen:?}");
}

#[test]
fn an_upstream_factor_counts_as_the_class_its_trust_mapping_gave_it() {
    let cfg = AssuranceConfig::default();
    let at = t0();
    let know = PassedFactor::upstream("pwd", AuthenticatorClass::Knowledge, false, false, at);
    let have = PassedFactor::upstream("mfa", AuthenticatorClass::Possession, false, false, at);
    assert_eq!(
        crate::assurance::aal_of(std::slice::from_ref(&know), &cfg),
        1
    );
    assert_eq!(
        crate::assurance::aal_of(&[know.clone(), have.clone()], &cfg),
        2
    );
    // Two of one class are still one factor.
    assert_eq!(
        crate::assurance::aal_of(&[have.clone(), have.clone()], &cfg),
        1
    );
    // The upstream sign-in and stepgate's own TOTP are two.
    let totp = PassedFactor::new(FactorKind::Totp, &cfg, at);
    assert_eq!(crate::assurance::aal_of(&[know.clone(), totp], &cfg), 2);
    // Phishing-resistant only when the mapping says so; a class on a local factor is
    // ignored (it is the upstream's alone).
    let a = assess_factors(&[know.clone(), have], &cfg);
    assert!(!a.phishing_resistant);
    let hwk = PassedFactor::upstream("hwk", AuthenticatorClass::Possession, true, true, at);
    let a = assess_factors(&[know, hwk], &cfg);
    assert!(a.phishing_resistant && a.hardware_bound);
    assert_eq!(a.aal, 3);
    let mut pwd = PassedFactor::new(FactorKind::Password, &cfg, at);
    pwd.class = Some(AuthenticatorClass::Possession);
    let pwd2 = PassedFactor::new(FactorKind::Password, &cfg, at);
    assert_eq!(crate::assurance::aal_of(&[pwd, pwd2], &cfg), 1);
}

#[test]
fn an_upstream_factor_names_only_a_registered_rfc_8176_method_in_amr() {
    let cfg = AssuranceConfig::default();
    let at = t0();
    // The untrusted upstream sign-in ("fed" inside stepgate) names no method.
    let fed = PassedFactor::upstream("fed", AuthenticatorClass::Knowledge, false, false, at);
    let a = assess_factors(std::slice::from_ref(&fed), &cfg);
    assert_eq!(a.aal, 1);
    assert!(a.amr.is_empty(), "{:?}", a.amr);
    // With stepgate's own TOTP after it: only `otp`.
    let totp = PassedFactor::new(FactorKind::Totp, &cfg, at);
    assert_eq!(assess_factors(&[fed, totp], &cfg).amr, vec!["otp", "mfa"]);
    // A trusted provider-specific value counts as its class but is not named; a trusted
    // registered one is.
    let ngc = PassedFactor::upstream("ngcmfa", AuthenticatorClass::Possession, false, false, at);
    let pwd = PassedFactor::upstream("pwd", AuthenticatorClass::Knowledge, false, false, at);
    let a = assess_factors(&[pwd, ngc], &cfg);
    assert_eq!(a.aal, 2);
    assert_eq!(a.amr, vec!["pwd", "mfa"]);
    assert!(a.amr.iter().all(|m| RFC8176_AMR.contains(&m.as_str())));
}
