//! The server shell as an operator and a browser meet it.

use kanpa_ledger::store;
use kanpa_ledger::{Money, NewEntry};

use crate::harness::{TestApp, TestBackend};
use crate::ledger::{header, open_books};
use crate::on_both_backends;

on_both_backends!(
    health_readiness_and_metrics_answer,
    every_response_carries_a_request_id_and_keeps_one_it_was_given,
    pages_speak_japanese_by_default_and_english_when_asked,
    errors_are_pages_for_people_and_json_for_the_api,
);

async fn health_readiness_and_metrics_answer(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready");

    let books = open_books(&app.db, "metrics", 1).await;
    let entry =
        NewEntry::transfer(header(books.org, "m1"), books.accounts[0].id, books.accounts[2].id, Money::yen(1)).unwrap();
    store::post_entry(&app.db, &entry).await.unwrap();

    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains(r#"kanpa_http_requests_total{method="GET",route="/healthz",status="200"}"#), "{text}");
    assert!(text.contains("kanpa_http_request_duration_seconds_bucket"), "{text}");
    let posted = text
        .lines()
        .find(|l| l.starts_with("kanpa_ledger_entries_posted_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("ledger metric present");
    assert!(posted >= 1.0);
    app.stop().await;
}

async fn every_response_carries_a_request_id_and_keeps_one_it_was_given(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let fresh = app.get("/").await;
    let id = fresh.headers().get("x-request-id").expect("request id").to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "{id}");
    let given = app.client.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(given.headers()["x-request-id"], "abc-123");
    app.stop().await;
}

async fn pages_speak_japanese_by_default_and_english_when_asked(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let ja = app.get("/").await.text().await.unwrap();
    assert!(ja.contains(r#"<html lang="ja">"#) && ja.contains("募集中のキャンペーン"), "{ja}");

    let en = app.client.get(app.url("/")).header("accept-language", "en-US,en;q=0.9").send().await.unwrap();
    let en = en.text().await.unwrap();
    assert!(en.contains(r#"<html lang="en">"#) && en.contains("Open campaigns"), "{en}");

    let switched = app.get("/?lang=en").await;
    let cookie = switched.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("lang=en"), "{cookie}");
    assert!(switched.text().await.unwrap().contains("Open campaigns"));

    // The cookie wins over the browser's header.
    let by_cookie =
        app.client.get(app.url("/")).header("cookie", "lang=ja").header("accept-language", "en").send().await.unwrap();
    assert!(by_cookie.text().await.unwrap().contains("募集中のキャンペーン"));
    app.stop().await;
}

async fn errors_are_pages_for_people_and_json_for_the_api(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let page = app.get("/no/such/page").await;
    assert_eq!(page.status(), 404);
    let id = page.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let body = page.text().await.unwrap();
    assert!(body.contains("お探しのページは見つかりませんでした"), "{body}");
    assert!(body.contains(&id), "the page quotes the request id");

    let api = app.client.get(app.url("/api/v1/nothing")).header("accept-language", "en").send().await.unwrap();
    assert_eq!(api.status(), 404);
    let json: serde_json::Value = api.json().await.unwrap();
    assert_eq!(json["error"]["code"], "not_found");
    assert_eq!(json["error"]["message"], "We could not find the page you were looking for.");
    assert_eq!(json["error"]["request_id"].as_str().unwrap().len(), 36);
    app.stop().await;
}
