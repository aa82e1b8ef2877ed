//! The test inspector: an app's receiving address keeps what it gets (the
//! newest 100), checks signatures against the app's endpoints pointing at
//! it, and stops when deleted.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app, TestApp};

async fn received(app: &TestApp, tenant: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/app/{tenant}/inspector/request/")).await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_inspector_keeps_deliveries_and_says_whether_they_are_signed() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    assert_eq!(app.get(&format!("/app/{tenant}/inspector/")).await.0, 404);

    let (status, inspector) = app
        .post(&format!("/app/{tenant}/inspector/"), json!({}))
        .await;
    assert_eq!(status, 201, "{inspector}");
    let url = inspector["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("http://{}/inspect/", app.address)),
        "{url}"
    );
    let (status, again) = app
        .post(&format!("/app/{tenant}/inspector/"), json!({}))
        .await;
    assert_eq!((status, again["url"].as_str()), (200, Some(url.as_str())));
    assert!(received(&app, &tenant).await.is_empty());

    // A real delivery: Herald signs it for the endpoint pointing here.
    let endpoint = app
        .create_endpoint(&tenant, &format!("{url}/hooks"), None)
        .await;
    let message = app
        .send(&tenant, "call.completed", json!({"callId": "c-42"}))
        .await;
    let delivery = eventually(Duration::from_secs(10), "the delivery", || async {
        received(&app, &tenant).await.into_iter().next()
    })
    .await;
    assert_eq!(delivery["method"], "POST");
    assert_eq!(delivery["path"], "/hooks");
    assert_eq!(delivery["headers"]["webhook-id"], message.as_str());
    assert_eq!(delivery["bodyEncoding"], "utf8");
    let body: Value = serde_json::from_str(delivery["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"]["callId"], "c-42");
    assert_eq!(delivery["signature"]["status"], "valid", "{delivery}");
    assert_eq!(delivery["signature"]["endpointId"], endpoint.as_str());
    // Herald's attempt saw the inspector's answer (recorded once Herald
    // has read it, a moment after the inspector kept the request).
    crate::helpers::attempted(&app, &tenant, &message, 1).await;
    let attempts = app.attempts_of(&tenant, &message).await;
    assert_eq!(attempts[0]["responseStatusCode"], 200);

    // A request that is not Herald's: unsigned, bytes kept as base64; a
    // forged signature is invalid; a body over 64 KiB is cut.
    let client = reqwest::Client::new();
    let raw = client
        .put(format!("{url}?source=curl"))
        .body(vec![0xff, 0xfe, 0x00, 0x41])
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    client
        .post(&url)
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", "1700000000")
        .header(
            "webhook-signature",
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    client
        .post(&url)
        .body("x".repeat(70 * 1024))
        .send()
        .await
        .unwrap();
    let list = received(&app, &tenant).await;
    assert_eq!(list.len(), 4);
    let (big, forged, bytes) = (&list[0], &list[1], &list[2]);
    assert_eq!(big["bodyTruncated"], true);
    assert_eq!(big["body"].as_str().unwrap().len(), 64 * 1024);
    assert_eq!(forged["signature"]["status"], "invalid");
    assert_eq!(bytes["method"], "PUT");
    assert_eq!(bytes["query"], "source=curl");
    assert_eq!(bytes["bodyEncoding"], "base64");
    assert_eq!(bytes["body"], "//4AQQ==");
    assert_eq!(bytes["signature"]["status"], "unsigned");

    // Only the newest 100 are kept.
    for n in 0..100 {
        client
            .post(format!("{url}/n/{n}"))
            .body("{}")
            .send()
            .await
            .unwrap();
    }
    let list = received(&app, &tenant).await;
    assert_eq!(list.len(), 100);
    assert_eq!(list[0]["path"], "/n/99");
    assert_eq!(list[99]["path"], "/n/0");
    let (_, limited) = app
        .get(&format!("/app/{tenant}/inspector/request/?limit=2"))
        .await;
    assert_eq!(limited["data"].as_array().unwrap().len(), 2);

    // An unknown address, and a deleted inspector's, answer 404.
    let unknown = client
        .post(format!("http://{}/inspect/not-a-token", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let (status, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!("/app/{tenant}/inspector/"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let gone = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(
        app.get(&format!("/app/{tenant}/inspector/request/"))
            .await
            .0,
        404
    );
}
