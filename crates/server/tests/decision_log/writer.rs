//! The writer: decisions made together are written together without a flush, and a
//! graceful stop writes what it still gathers.

use super::*;

/// While decisions keep coming the writer gathers them: fifty made back to back reach the
/// store without anyone asking for a flush, in far fewer transactions than records (the
/// first at once, the rest gathered behind it).
#[tokio::test]
async fn decisions_made_together_are_written_together_without_a_flush() {
    let state = Server::build(CONFIG)
        .with("UPSTREAM", "127.0.0.1:9")
        .state()
        .await;
    let st = &state.st;
    let before = appends(st);
    let mut ids = Vec::new();
    for _ in 0..50 {
        let (id, what) = decide(&st.access, st, None).await;
        assert_eq!(what, "sign_in");
        ids.push(id);
    }
    all_recorded(st, &ids, std::time::Duration::from_secs(20)).await;
    let transactions = appends(st) - before;
    assert!(
        (1..=25).contains(&transactions),
        "50 decisions in {transactions} transactions"
    );
}

/// A graceful stop writes what the writer still gathers: of two requests made back to
/// back the second's record waits behind the first's write; the server is stopped at
/// once, and by the time it has stopped (no flush asked for) the record is in the store,
/// and still there for the node started again on the same data.
#[tokio::test]
async fn a_graceful_stop_writes_the_decisions_still_gathered() {
    let support::State { st, key, dir } = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream").await)
        .state()
        .await;
    let serving = support::Serving::start(&st).await;
    let port = serving.port;
    let c = no_redirects();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = c
            .get(format!("http://app.test:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        ids.push(header(&r, "x-request-id"));
    }
    serving.stop().await;
    for id in &ids {
        let found = st.stores.durable.get_decision(id).await.unwrap();
        assert!(
            found.is_some(),
            "{id} not written by the time the server stopped"
        );
    }
    drop(st);

    let again = Server::build(CONFIG)
        .with("UPSTREAM", "127.0.0.1:9")
        .in_dir(dir)
        .key(key)
        .state()
        .await;
    for id in &ids {
        let found = again.st.stores.durable.get_decision(id).await.unwrap();
        assert!(found.is_some(), "{id} lost across the restart");
    }
}
