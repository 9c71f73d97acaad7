//! A full queue drops allowed records (counted) and never a denial; past `max_rows` the
//! oldest decisions are deleted.

use super::*;

#[tokio::test]
async fn a_full_queue_drops_allowed_records_and_keeps_every_denial() {
    let cfg = CONFIG.replace(
        "policies:\n",
        "policies:\n  - { name: deny-jane, priority: 1, targets: { sign_in: true }, outcome: deny }\n",
    );
    let state = Server::build(&cfg)
        .with("UPSTREAM", "127.0.0.1:9")
        .demo_users()
        .state()
        .await;
    let st = &state.st;
    let jane = user(st, "jane").await;
    // A pipeline over the server's services, with a log of room for one record whose
    // writer has not started: what finds the queue full is dropped or waits.
    let log = Arc::new(DecisionLog::new(1));
    let access = stepgate_server::access::Access::new(
        st.sessions.clone(),
        st.cache.clone(),
        st.access.signals().clone(),
        st.devices.clone(),
    )
    .with_decision_log(log.clone());

    let (first, what) = decide(&access, st, None).await;
    assert_eq!(what, "sign_in");
    // 98 more: the queue is full, each is dropped (the 100th would wait: a sample).
    for _ in 0..98 {
        decide(&access, st, None).await;
    }
    assert_eq!(log.stats().dropped.get(), 98);
    assert_eq!(log.queued(), 1);

    // A denial waits for room instead: it completes once the writer runs.
    let denial = {
        let access = &access;
        let jane = &jane;
        async move { decide(access, st, Some(jane)).await }
    };
    let writer = async {
        tokio::task::yield_now().await;
        log.spawn_writer(st);
    };
    let ((denied, what), ()) = tokio::join!(denial, writer);
    assert_eq!(what, "deny");
    log.flush().await;
    assert_eq!(log.stats().dropped.get(), 98);
    let kept = st
        .stores
        .durable
        .list_decisions(&DecisionQuery {
            oldest_first: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = kept.iter().map(|d| d.request_id.as_str()).collect();
    assert_eq!(ids, vec![first.as_str(), denied.as_str()]);
    assert_eq!(kept[1].policy.as_deref(), Some("deny-jane"));
    assert_eq!(kept[1].kind, "sign_in");
}

/// `log.decisions.max_rows`: the purge task keeps the newest that many and deletes the rest,
/// whatever their age (here all within `retention`).
#[tokio::test]
async fn past_max_rows_the_oldest_decisions_are_deleted() {
    let yaml = CONFIG.replace("UPSTREAM", "127.0.0.1:9");
    let first = Server::build(&yaml).state().await;
    let now = chrono::Utc::now();
    let records: Vec<DecisionRecord> = (0..10)
        .map(|i| DecisionRecord {
            request_id: format!("bounded-{i:02}"),
            time: now - chrono::Duration::minutes(60 - i),
            kind: "access".into(),
            user: Some("jane".into()),
            session: None,
            app: Some("console".into()),
            route: None,
            method: "GET".into(),
            path: "/".into(),
            ip: None,
            device: None,
            policy: None,
            policy_outcome: Some("allow".into()),
            outcome: "allow".into(),
            report_only: serde_json::json!([]),
            detail: serde_json::json!({}).into(),
        })
        .collect();
    first
        .st
        .stores
        .durable
        .append_decisions(&records)
        .await
        .unwrap();
    let all = DecisionQuery {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        first
            .st
            .stores
            .durable
            .list_decisions(&all)
            .await
            .unwrap()
            .len(),
        10
    );

    // The same store under `max_rows: 3`: the writer prunes when it starts.
    let bounded = yaml.replace(
        "decisions: { allowed_one_in: 1 }",
        "decisions: { allowed_one_in: 1, max_rows: 3 }",
    );
    let again = Server::build(&bounded)
        .in_dir(first.dir)
        .key(first.key.clone())
        .state()
        .await;
    let mut kept = Vec::new();
    for _ in 0..100 {
        kept = again
            .st
            .stores
            .durable
            .list_decisions(&all)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.request_id)
            .collect::<Vec<_>>();
        if kept.len() <= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        kept,
        ["bounded-09", "bounded-08", "bounded-07"],
        "the newest three"
    );
}
