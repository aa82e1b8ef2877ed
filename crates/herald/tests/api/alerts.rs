//! Alert rules per app: which operational events an app raises, narrowed
//! to the event types that matter, with its own thresholds and recipients.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{attempted, eventually, spawn_app_with, Options, Receiver, Reply, SmtpSink};

#[tokio::test]
async fn an_apps_rules_narrow_its_alerts_to_the_event_types_it_cares_about() {
    let receiver = Receiver::start().await;
    let smtp = SmtpSink::start().await;
    let app = spawn_app_with(Options {
        email: Some(herald_dispatch::EmailConfig {
            smtp_url: smtp.url(),
            from: "herald@example.com".into(),
            to: vec!["oncall@example.com".into()],
        }),
        auto_disable: None,
        failing_after: 100, // the app's own rule says 2
        operator_webhook_url: Some(receiver.url("/ops")),
        ..Options::default()
    })
    .await;
    let crm = app.create_app("CRM customer").await;
    let quiet = app.create_app("Quiet customer").await;
    let (status, rules) = app
        .request(
            reqwest::Method::PUT,
            &format!("/app/{crm}/alert-rules/"),
            Some(json!({
                "events": ["endpoint.failing", "message.attempt.exhausted"],
                "filterTypes": ["call.*"],
                "failingAfter": 2,
                "emailTo": ["crm-team@example.com"],
            })),
        )
        .await;
    assert_eq!(status, 200, "{rules}");
    assert_eq!(rules["effective"]["failingAfter"], 2, "{rules}");
    assert_eq!(
        rules["effective"]["events"],
        json!(["endpoint.failing", "message.attempt.exhausted"])
    );
    let (status, _) = app
        .request(
            reqwest::Method::PUT,
            &format!("/app/{quiet}/alert-rules/"),
            Some(json!({"events": []})),
        )
        .await;
    assert_eq!(status, 200);
    receiver.always("/crm", Reply::Status(500));
    receiver.always("/quiet", Reply::Status(500));
    app.create_endpoint(&crm, &receiver.url("/crm"), None).await;
    app.create_endpoint(&quiet, &receiver.url("/quiet"), None)
        .await;
    let ops_events = || {
        receiver
            .requests_to("/ops")
            .into_iter()
            .map(|r| r.json())
            .collect::<Vec<_>>()
    };

    // A type the CRM app does not care about fails all the way, and so does
    // everything of the silenced app: no alert.
    let contact = app.send(&crm, "contact.updated", json!({"n": 1})).await;
    let quiet_call = app.send(&quiet, "call.completed", json!({"n": 2})).await;
    attempted(&app, &crm, &contact, 4).await;
    attempted(&app, &quiet, &quiet_call, 4).await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // two health flushes
    assert_eq!(ops_events(), Vec::<serde_json::Value>::new());

    // A call event fails: the run (already 4 long) is reported, and its
    // exhaustion too, once each.
    let call = app.send(&crm, "call.completed", json!({"n": 3})).await;
    attempted(&app, &crm, &call, 4).await;
    let events = eventually(Duration::from_secs(10), "two alerts", || async {
        let events = ops_events();
        (events.len() >= 2).then_some(events)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // one more flush
    let events = if ops_events().len() > events.len() {
        ops_events()
    } else {
        events
    };
    let mut types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    types.sort_unstable();
    assert_eq!(
        types,
        ["endpoint.failing", "message.attempt.exhausted"],
        "{events:?}"
    );
    for event in &events {
        assert_eq!(event["data"]["appId"], crm.as_str(), "{event}");
    }
    let exhausted = events
        .iter()
        .find(|e| e["type"] == "message.attempt.exhausted")
        .unwrap();
    assert_eq!(exhausted["data"]["msgId"], call.as_str());
    assert_eq!(exhausted["data"]["eventType"], "call.completed");

    // The app's recipients get the e-mails besides the server's.
    let mails = eventually(Duration::from_secs(10), "two e-mails", || async {
        let mails = smtp.mails();
        (mails.len() >= 2).then_some(mails)
    })
    .await;
    for mail in &mails {
        assert!(mail.contains("oncall@example.com"), "{mail}");
        assert!(mail.contains("crm-team@example.com"), "{mail}");
    }
}

#[tokio::test]
async fn alert_rules_are_validated_read_back_and_reset() {
    let app = spawn_app_with(Options {
        failing_after: 7,
        success_rate: Some(herald_store::RateRule {
            threshold: 0.9,
            min_attempts: 20,
        }),
        ..Options::default()
    })
    .await;
    let tenant = app.create_app("Acme").await;
    let path = format!("/app/{tenant}/alert-rules/");

    let (status, defaults) = app.get(&path).await;
    assert_eq!(status, 200, "{defaults}");
    assert_eq!(defaults["rules"], json!({}), "nothing set");
    assert_eq!(
        defaults["effective"],
        json!({
            "events": ["endpoint.disabled", "endpoint.failing", "endpoint.success_rate_dropped",
                       "message.attempt.exhausted", "message.attempt.recovered"],
            "filterTypes": null,
            "failingAfter": 7,
            "successRateThreshold": 0.9,
            "successRateMinAttempts": 20,
            "emailTo": [],
        })
    );

    let cases = [
        (json!({"events": ["endpoint.exploded"]}), "events"),
        (json!({"filterTypes": ["not a type!"]}), "filterTypes"),
        (json!({"failingAfter": 0}), "failingAfter"),
        (json!({"successRateThreshold": 2}), "successRateThreshold"),
        (json!({"emailTo": ["nobody"]}), "emailTo"),
        (json!({"surprise": true}), "surprise"),
    ];
    for (body, field) in cases {
        let (status, error) = app
            .request(reqwest::Method::PUT, &path, Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body} -> {error}");
        assert!(
            crate::helpers::detail_text(&error).contains(field),
            "{body} -> {error}"
        );
    }

    let (status, set) = app
        .request(
            reqwest::Method::PUT,
            &path,
            Some(json!({"successRateThreshold": 0.5, "filterTypes": ["contact.created"]})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let (_, read) = app.get(&path).await;
    assert_eq!(read, set, "read back as set");
    assert_eq!(read["effective"]["successRateThreshold"], 0.5);
    assert_eq!(read["effective"]["successRateMinAttempts"], 20);
    assert_eq!(read["effective"]["filterTypes"], json!(["contact.created"]));

    let (status, _) = app.request(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    let (_, reset) = app.get(&path).await;
    assert_eq!(reset, defaults);
    let (status, _) = app
        .get("/app/app_01J9Z3T4M5N6P7Q8R9S0T1V2W3/alert-rules/")
        .await;
    assert_eq!(status, 404);
}
