//! Outgoing webhooks and the file mailer, through the running server.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use kanpa_ledger::{Locale, store};
use kanpa_messaging::email::{EmailAddress, EmailTemplate};
use kanpa_messaging::hooks;
use kanpa_messaging::outbox::{self, NewEmail, Queued};

use crate::harness::{TestApp, TestBackend, eventually};
use crate::on_both_backends;

on_both_backends!(
    outgoing_webhooks_are_signed_retried_and_logged,
    an_email_queued_twice_is_sent_once_with_a_stable_message_id,
);

#[derive(Clone, Default)]
struct Receiver {
    secret: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<(String, String, bool)>>>,
}

/// Answers 500 twice, then 200; records each request's event id, body and
/// whether its signature verified.
async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let signature = headers.get("kanpa-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let t: i64 = signature.split(',').find_map(|p| p.strip_prefix("t=")).and_then(|t| t.parse().ok()).unwrap_or(0);
    let verified = signature == hooks::sign(&r.secret.lock().unwrap(), t, &body);
    let event_id = headers.get("kanpa-event-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut seen = r.seen.lock().unwrap();
    seen.push((event_id, body, verified));
    if seen.len() <= 2 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
}

async fn outgoing_webhooks_are_signed_retried_and_logged(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let router = Router::new().route("/hooks", post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut tx = app.db.begin().await.unwrap();
    let org = store::create_organisation(&mut tx, "chapter", "Chapter").await.unwrap();
    let other = store::create_organisation(&mut tx, "other", "Other").await.unwrap();
    let endpoint = hooks::register(&mut tx, org.id, &url, &["pledge.created".to_owned()], true).await.unwrap().unwrap();
    let unsubscribed =
        hooks::register(&mut tx, org.id, &url, &["campaign.goal_reached".to_owned()], true).await.unwrap().unwrap();
    // Not HTTPS and not allowed: refused.
    let refused = hooks::register(&mut tx, org.id, "http://example.jp/h", &["pledge.created".to_owned()], true).await;
    assert_eq!(refused.unwrap().unwrap_err(), hooks::HookError::NotHttps);
    *receiver.secret.lock().unwrap() = endpoint.secret.clone();
    let queued = hooks::emit(&mut tx, org.id, "pledge.created", serde_json::json!({ "pledge": 7, "amount": 3000 }))
        .await
        .unwrap();
    assert_eq!(queued, 1, "only the subscribed endpoint gets it");
    assert_eq!(hooks::emit(&mut tx, other.id, "pledge.created", serde_json::json!({})).await.unwrap(), 0);
    tx.commit().await.unwrap();
    assert_ne!(unsubscribed.id, endpoint.id);

    eventually(30, "the delivery succeeds on its third attempt", || async {
        hooks::delivery_log(&app.db, org.id, 10).await.unwrap().first().is_some_and(|d| d.status == "delivered")
    })
    .await;
    let log = hooks::delivery_log(&app.db, org.id, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    let codes: Vec<Option<i32>> = log[0].attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)]);

    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(_, _, verified)| *verified), "every attempt carries a valid signature");
    assert!(
        seen.iter().all(|(id, body, _)| *id == log[0].event_id && *body == seen[0].1),
        "retries resend the same event"
    );
    let body: serde_json::Value = serde_json::from_str(&seen[0].1).unwrap();
    assert_eq!(body["kind"], "pledge.created");
    assert_eq!(body["data"]["amount"], 3000);
    app.stop().await;
}

async fn an_email_queued_twice_is_sent_once_with_a_stable_message_id(backend: TestBackend) {
    let outbox_dir = tempfile::tempdir().unwrap();
    let dir = outbox_dir.path().to_owned();
    let Some(app) = TestApp::spawn_with(backend, Default::default(), |c| {
        c.mail.file_dir = dir.display().to_string();
    })
    .await
    else {
        return;
    };
    let email = NewEmail {
        key: "sign-in:1".into(),
        to: EmailAddress::parse("hanako@example.jp").unwrap(),
        to_name: Some("山田 花子".into()),
        locale: Locale::Ja,
        template: EmailTemplate::SignInLink { link: "http://127.0.0.1/s/abc".into(), expires_in_minutes: 15 },
    };
    for expected in ["new", "again"] {
        let mut tx = app.db.begin().await.unwrap();
        let queued = outbox::enqueue(&mut tx, &email, "kanpa.test").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(matches!(queued, Queued::New(_)), expected == "new");
    }
    // A name carrying a header is refused before anything is stored.
    let mut injected = email.clone();
    injected.key = "sign-in:2".into();
    injected.to_name = Some("Eve\r\nBcc: everyone@example.jp".into());
    let mut tx = app.db.begin().await.unwrap();
    assert!(outbox::enqueue(&mut tx, &injected, "kanpa.test").await.is_err());
    tx.rollback().await.unwrap();

    eventually(30, "the email is sent", || async {
        outbox::all(&app.db).await.unwrap().iter().all(|e| e.status == "sent")
    })
    .await;
    let rows = outbox::all(&app.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    let raw = std::fs::read_to_string(&files[0]).unwrap();
    assert!(raw.contains(&format!("Message-ID: {}", rows[0].message_id)), "{raw}");
    assert!(raw.contains("To: =?utf-8?b?"), "the Japanese name is encoded: {raw}");
    assert!(!raw.contains("Bcc"));
    app.stop().await;
}
