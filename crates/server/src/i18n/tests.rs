//! The catalogues, the language negotiation and the template function.

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn every_english_key_is_in_every_language() {
    let en = keys(Lang::En.source());
    assert!(
        en.len() > 100,
        "the English catalogue has {} keys",
        en.len()
    );
    for (lang, src) in sources().skip(1) {
        let have = keys(src);
        let missing: Vec<_> = en.iter().filter(|k| !have.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "locales/{}.ftl lacks {missing:?}",
            lang.code()
        );
        let extra: Vec<_> = have.iter().filter(|k| !en.contains(k)).collect();
        assert!(
            extra.is_empty(),
            "locales/{}.ftl has keys English lacks: {extra:?}",
            lang.code()
        );
    }
}

#[test]
fn every_catalogue_loads_and_every_message_formats_without_errors() {
    for (lang, src) in sources() {
        let b = lang.bundle();
        for k in keys(src) {
            let m = b.get_message(k).unwrap_or_else(|| panic!("{k} not loaded"));
            let p = m.value().unwrap_or_else(|| panic!("{k} has no value"));
            // Every variable a message uses, given as a number and as text.
            let mut fa = FluentArgs::new();
            for v in [
                "app",
                "name",
                "n",
                "who",
                "minutes",
                "at",
                "user",
                "browser",
                "os",
                "when",
                "what",
                "title",
                "label",
                "code",
                "wait",
                "place",
                "email",
                "url",
                "text",
                "kind",
                "provider",
                "min",
                "time",
                "reference",
                "request",
                "policy",
                "until",
                "until_utc",
                "address",
                "attr",
                "seen",
                "value",
                "display_name",
                "check",
                "age",
                "count",
                "status",
                "path",
                "why",
                "place",
            ] {
                fa.set(v, FluentValue::from(1));
            }
            let mut errors = Vec::new();
            let _ = b.format_pattern(p, Some(&fa), &mut errors);
            assert!(errors.is_empty(), "{}: {k}: {errors:?}", lang.code());
        }
    }
}

/// Every key a template or a source file asks for is in the English catalogue (a typo
/// would show the key to the user).
#[test]
fn every_key_asked_for_exists() {
    let en = keys(Lang::En.source());
    let re = regex::Regex::new(
        r#"\b(?:t|t_with|tr\(\w+(?:::\w+)?,)\s*\(?\s*["']([a-z][a-z0-9_-]*)["']"#,
    )
    .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut asked = 0;
    let mut files = Vec::new();
    for dir in ["templates", "src"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
    }
    for p in files {
        let text = std::fs::read_to_string(&p).unwrap();
        for c in re.captures_iter(&text) {
            let k = &c[1];
            // The docs' placeholder, and the test of a missing key.
            if k == "key" || k == "no-such-key" {
                continue;
            }
            asked += 1;
            assert!(
                en.contains(&k),
                "{} asks for `{k}`, which locales/en.ftl lacks",
                p.display()
            );
        }
    }
    assert!(
        asked > 100,
        "only {asked} keys asked for: the pattern is wrong"
    );
    // The keys built from a factor's kind.
    for k in stepgate_policy::KNOWN_FACTORS {
        for key in [format!("factor-{k}"), format!("needs-{k}")] {
            assert!(en.contains(&key.as_str()), "locales/en.ftl lacks `{key}`");
        }
    }
}

#[test]
fn the_cookie_wins_then_accept_language_by_weight_then_english() {
    assert_eq!(negotiate(&headers(&[])), Lang::En);
    assert_eq!(
        negotiate(&headers(&[(
            "accept-language",
            "fr-CH, fr;q=0.9, en;q=0.8"
        )])),
        Lang::Fr
    );
    assert_eq!(
        negotiate(&headers(&[(
            "accept-language",
            "de-DE, en;q=0.5, fr;q=0.7"
        )])),
        Lang::Fr
    );
    assert_eq!(
        negotiate(&headers(&[("accept-language", "fr;q=0, en")])),
        Lang::En
    );
    assert_eq!(
        negotiate(&headers(&[("accept-language", "de, es")])),
        Lang::En
    );
    assert_eq!(
        negotiate(&headers(&[
            ("accept-language", "fr"),
            ("cookie", "a=b; stepgate_lang=en")
        ])),
        Lang::En
    );
    assert_eq!(
        negotiate(&headers(&[("cookie", "stepgate_lang=fr")])),
        Lang::Fr
    );
    // An unknown cookie value is no choice.
    assert_eq!(
        negotiate(&headers(&[
            ("cookie", "stepgate_lang=xx"),
            ("accept-language", "fr")
        ])),
        Lang::Fr
    );
    // The cookie is found among others and in any line (HTTP/2 sends one per cookie); a
    // name that only holds it is another cookie.
    assert_eq!(
        negotiate(&headers(&[
            ("cookie", "stepgate_session=s; stepgate_x=1"),
            ("cookie", "a=b; stepgate_lang=fr")
        ])),
        Lang::Fr
    );
    assert_eq!(
        negotiate(&headers(&[(
            "cookie",
            "xstepgate_lang=fr; stepgate_langs=fr"
        )])),
        Lang::En
    );
    assert!(names_lang_cookie(b"a stepgate_lang"));
    assert!(!names_lang_cookie(b"stepgate_lan"));
}

#[test]
fn a_reader_chooses_when_asked_what_negotiation_chooses_at_once() {
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[("accept-language", "fr-CH, fr;q=0.9, en;q=0.8")],
        &[("accept-language", "fr;q=0, en")],
        &[("cookie", "stepgate_lang=fr")],
        &[
            ("cookie", "a=b; stepgate_lang=en"),
            ("accept-language", "fr"),
        ],
        &[("cookie", "stepgate_lang=xx"), ("accept-language", "fr")],
        &[
            ("cookie", "stepgate_lang=fr; stepgate_lang=en"),
            ("accept-language", "fr"),
        ],
        // Several lines of a header: chosen at once, from all of them.
        &[
            ("cookie", "stepgate_session=s"),
            ("cookie", "stepgate_lang=fr"),
        ],
        &[
            ("cookie", "stepgate_lang=fr"),
            ("cookie", "stepgate_lang=en"),
        ],
        &[("accept-language", "de"), ("accept-language", "fr;q=0.5")],
        &[
            ("accept-language", "de"),
            ("cookie", "a=b"),
            ("accept-language", "fr;q=0.5"),
        ],
    ];
    let uri: Uri = "/_stepgate/login?x=1".parse().unwrap();
    for case in cases {
        let h = headers(case);
        let reader = Reader::of(&Method::GET, &uri, &h);
        assert_eq!(reader.lang(), negotiate(&h), "{case:?}");
        // Asked again: the same, from the choice kept.
        assert_eq!(reader.lang(), negotiate(&h), "{case:?}");
        assert_eq!(reader.back.as_ref(), Some(&uri));
    }
    assert_eq!(
        Reader::of(&Method::GET, &uri, &headers(cases[7])).lang(),
        Lang::Fr
    );
    assert_eq!(
        Reader::of(&Method::GET, &uri, &headers(cases[9])).lang(),
        Lang::Fr
    );
    assert!(Reader::of(&Method::POST, &uri, &headers(&[]))
        .back
        .is_none());
}

#[test]
fn the_switcher_comes_back_only_to_a_path_here() {
    assert!(local_path("/_stepgate/login?t=abc"));
    for bad in [
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "",
        "x",
    ] {
        assert!(!local_path(bad), "{bad}");
    }
}

#[test]
fn messages_take_values_and_french_falls_back_to_english_only_for_missing_keys() {
    assert_eq!(
        tr(Lang::En, "login-continue-to", &[("app", "CRM".into())]),
        "to continue to <strong>CRM</strong>"
    );
    assert_eq!(
        tr(Lang::Fr, "login-continue-to", &[("app", "CRM".into())]),
        "pour continuer vers <strong>CRM</strong>"
    );
    assert_eq!(tr(Lang::Fr, "no-such-key", &[]), "no-such-key");
    assert_eq!(
        tr(Lang::En, "duration-minutes", &[("n", 1.into())]),
        "1 minute"
    );
    assert_eq!(
        tr(Lang::En, "duration-minutes", &[("n", 5.into())]),
        "5 minutes"
    );
    assert_eq!(
        tr(Lang::Fr, "duration-minutes", &[("n", 5.into())]),
        "5 minutes"
    );
}

#[test]
fn t_in_a_template_keeps_the_catalogues_markup_and_escapes_the_values() {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    add_to(&mut env);
    env.add_template(
        "x.html",
        r#"{{ t("login-continue-to", app=name) }}|{% set s %}<i>{{ name }}</i>{% endset %}{{ t("blocked-who-to-ask", who=s) }}|{{ t("stepup-cant-use-app") }}"#,
    )
    .unwrap();
    let render = |lang: &str| {
        env.get_template("x.html")
            .unwrap()
            .render(minijinja::context! { lang => lang, name => "<b>x</b>" })
            .unwrap()
    };
    assert_eq!(
        render("fr"),
        "pour continuer vers <strong>&lt;b&gt;x&lt;&#x2f;b&gt;</strong>|Si vous avez besoin d’accès, demandez à <i>&lt;b&gt;x&lt;&#x2f;b&gt;</i>.|Vous ne pouvez pas utiliser votre application d’authentification ?"
    );
    // As the template's own text was: an apostrophe is written as it is.
    assert!(render("en").ends_with("|Can't use your authenticator app?"));
}

/// A message may go in an attribute (`aria-label="{{ t(...) }}"`): no `"` outside a tag.
#[test]
fn no_message_has_a_double_quote_outside_its_markup() {
    let tag = regex::Regex::new(r"<[^>]*>").unwrap();
    for (lang, src) in sources() {
        for line in src.lines().filter(|l| !l.starts_with('#')) {
            let text = tag.replace_all(line, "");
            assert!(!text.contains('"'), "{}: {line}", lang.code());
        }
    }
}
