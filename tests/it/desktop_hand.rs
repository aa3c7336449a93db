//! `POST /api/desktop/hand`: the "I need help" launcher on a seat's desktop, through its
//! agent (here the test plays the agent). Who may call it, bad bodies, seats nobody holds,
//! the same queue, audit and limit as the page's button. `agent::hand` runs it with a real
//! agent and `lablink hand`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Answer, TestServer, mint_credential, open_hands};

async fn press(s: &TestServer, token: Option<&str>, body: Value) -> Answer {
    let mut req = s.client.post(s.url("/api/desktop/hand")).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    Answer::read(req.send().await.expect("POST")).await
}

#[tokio::test]
async fn only_the_vms_own_credential_raises_its_participants_hand() {
    let s = TestServer::start().await;
    s.register_running("vm-1").await;
    let claimed = s
        .claim("ada@example.org", &crate::helpers::crd_command("4/ada"))
        .await;
    assert_eq!(claimed.status, 200, "{}", claimed.html);
    s.register_running("vm-2").await;
    let own = mint_credential(&s, "vm-1").await;
    let other = mint_credential(&s, "vm-2").await;
    let up = json!({"hostname": "vm-1", "raised": true});

    press(&s, None, up.clone()).await.expect(401);
    press(&s, Some("not-the-token"), up.clone())
        .await
        .expect(401);
    // The shared token could raise any seat's hand; another VM's credential is not vm-1's.
    press(&s, Some(s.token()), up.clone()).await.expect(403);
    press(&s, Some(&other), up.clone()).await.expect(403);
    assert!(open_hands(&s).await.is_empty());

    // Bad bodies name what to fix.
    let wrong_type = press(&s, Some(&own), json!({"hostname": "vm-1", "raised": "yes"})).await;
    let body = wrong_type.expect(400);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("raised")),
        "{body}"
    );
    let missing = press(&s, Some(&own), json!({"hostname": "vm-1"})).await;
    let body = missing.expect(400);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("`raised`")),
        "{body}"
    );
    let unknown = press(
        &s,
        Some(&own),
        json!({"hostname": "vm-1", "raised": true, "who": 1}),
    )
    .await;
    let body = unknown.expect(400);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("who")),
        "{body}"
    );
    let bad_host = press(&s, Some(&own), json!({"hostname": "vm_1", "raised": true})).await;
    let body = bad_host.expect(400);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("hostname: ")),
        "{body}"
    );

    // Nobody sits at vm-2: no hand to raise.
    press(
        &s,
        Some(&other),
        json!({"hostname": "vm-2", "raised": true}),
    )
    .await
    .expect_error(
        409,
        "Nobody holds vm-2 now: there is no hand to raise or lower.",
    );

    let raised = press(&s, Some(&own), up.clone()).await.expect(200);
    assert_eq!(raised["raised"], true, "{raised}");
    assert_eq!(raised["taken_by"], Value::Null, "{raised}");
    assert!(raised["raised_at"].is_string(), "{raised}");
    let hands = open_hands(&s).await;
    assert_eq!(hands.len(), 1, "{hands:?}");
    assert_eq!(hands[0]["hostname"], "vm-1");
    assert_eq!(hands[0]["participant"], "ada@example.org");

    // Pressed again: the hand is up already; once taken, the answer names who comes.
    assert_eq!(press(&s, Some(&own), up.clone()).await.expect(200), raised);
    let id = hands[0]["id"].as_u64().expect("id");
    s.admin_json(Method::POST, &format!("/api/hands/{id}/take"), None)
        .await
        .expect(200);
    let taken = press(&s, Some(&own), up.clone()).await.expect(200);
    assert_eq!(taken["taken_by"], crate::helpers::ADMIN_USER, "{taken}");
    assert_eq!(open_hands(&s).await.len(), 1);

    let down = json!({"hostname": "vm-1", "raised": false});
    let lowered = press(&s, Some(&own), down.clone()).await.expect(200);
    assert_eq!(
        lowered,
        json!({"raised": false, "raised_at": null, "taken_by": null})
    );
    assert!(open_hands(&s).await.is_empty());
    assert_eq!(press(&s, Some(&own), down).await.expect(200), lowered);
    // Up, down and up again at once: a seat raises its hand at most every 3 s.
    let limited = press(&s, Some(&own), up).await;
    limited.expect(429);
    assert!(open_hands(&s).await.is_empty());

    // Audited as the participant, the same way as the page's button.
    let audit = s.recent_audit(50).await;
    let by = |action: &str| {
        audit
            .iter()
            .filter(|e| e.action == action && e.actor == "ada@example.org")
            .count()
    };
    assert_eq!((by("hand_raised"), by("hand_lowered")), (1, 1), "{audit:?}");
}
