//! The activity log: attempt and message listings with filters, walked page
//! by page over a seeded log of thousands of attempts.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app, Receiver, Reply, TestApp};

const TYPES: [&str; 3] = ["call.started", "contact.created", "campaign.started"];

/// Every id of a listing, walking forwards with `iterator` in pages of
/// `limit`; checks each page's shape on the way.
async fn walk(app: &TestApp, path: &str, limit: usize) -> Vec<Value> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut all = Vec::new();
    let mut iterator: Option<String> = None;
    loop {
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(it) = &iterator {
            url.push_str(&format!("&iterator={it}"));
        }
        let (status, page) = app.get(&url).await;
        assert_eq!(status, 200, "{url}: {page}");
        let data = page["data"].as_array().unwrap().clone();
        assert!(data.len() <= limit);
        all.extend(data);
        if page["done"] == true {
            return all;
        }
        iterator = Some(page["iterator"].as_str().unwrap().to_owned());
    }
}

fn ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Newest first, no repeats.
fn assert_ordered_without_repeats(ids: &[String], what: &str) {
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "{what}: not strictly newest first"
    );
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "{what}"
    );
}

async fn settled(app: &TestApp, tenant: &str, endpoint: &str, deliveries: i64) {
    eventually(Duration::from_secs(60), "all deliveries to end", || async {
        let (_, stats) = app
            .get(&format!("/app/{tenant}/endpoint/{endpoint}/stats/"))
            .await;
        let ended = stats["success"].as_i64().unwrap() + stats["fail"].as_i64().unwrap();
        (ended == deliveries).then_some(())
    })
    .await;
}

#[tokio::test]
async fn filters_and_pages_return_exactly_the_expected_attempts() {
    let app = spawn_app().await; // three 100 ms retries: four attempts per failure
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let ok = app
        .create_endpoint(&tenant, &receiver.url("/ok"), None)
        .await;
    let broken = app
        .create_endpoint(&tenant, &receiver.url("/broken"), None)
        .await;
    let missing = app
        .create_endpoint(&tenant, &receiver.url("/missing"), None)
        .await;
    receiver.always("/broken", Reply::Status(503));
    receiver.always("/missing", Reply::Status(404));
    let per_batch = 150;
    let send_batch = async |batch: usize| {
        for n in 0..per_batch {
            let event_type = TYPES[n % TYPES.len()];
            app.send(&tenant, event_type, json!({"batch": batch, "n": n}))
                .await;
        }
    };

    send_batch(0).await;
    for (endpoint, count) in [
        (&ok, per_batch),
        (&broken, per_batch),
        (&missing, per_batch),
    ] {
        settled(&app, &tenant, endpoint, count as i64).await;
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let middle = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(30)).await;
    send_batch(1).await;
    for endpoint in [&ok, &broken, &missing] {
        settled(&app, &tenant, endpoint, 2 * per_batch as i64).await;
    }
    let messages = 2 * per_batch;

    // Every attempt of the failing endpoint, in odd-sized pages.
    let base = format!("/app/{tenant}/attempt/endpoint/{broken}/");
    let all = walk(&app, &base, 97).await;
    assert_eq!(all.len(), messages * 4, "four attempts per message");
    assert_ordered_without_repeats(&ids(&all), "all attempts");
    assert!(all.iter().all(|a| a["responseStatusCode"] == 503));
    assert!(all.iter().all(|a| a["endpointId"] == broken.as_str()));

    // Status code classes and statuses.
    let count = async |path: String| walk(&app, &path, 250).await.len();
    let ok_base = format!("/app/{tenant}/attempt/endpoint/{ok}/");
    let missing_base = format!("/app/{tenant}/attempt/endpoint/{missing}/");
    assert_eq!(
        count(format!("{ok_base}?status_code_class=200")).await,
        messages
    );
    assert_eq!(count(format!("{ok_base}?status_code_class=500")).await, 0);
    assert_eq!(
        count(format!("{base}?status_code_class=500")).await,
        messages * 4
    );
    assert_eq!(
        count(format!("{missing_base}?status_code_class=400")).await,
        messages * 4
    );
    assert_eq!(
        count(format!("{missing_base}?status_code_class=200")).await,
        0
    );
    assert_eq!(count(format!("{ok_base}?status=0")).await, messages);
    assert_eq!(count(format!("{ok_base}?status=2")).await, 0);
    assert_eq!(count(format!("{base}?status=2")).await, messages * 4);

    // Event types: a third of the messages each.
    let of_type = walk(&app, &format!("{base}?event_types=contact.created"), 64).await;
    assert_eq!(of_type.len(), messages / 3 * 4);
    assert_ordered_without_repeats(&ids(&of_type), "one event type");
    let two = count(format!(
        "{ok_base}?event_types=call.started,campaign.started"
    ))
    .await;
    assert_eq!(two, messages / 3 * 2);

    // Time windows split the two batches exactly, with filters combined.
    let before = walk(&app, &format!("{base}?before={middle}"), 100).await;
    let after = walk(&app, &format!("{base}?after={middle}"), 100).await;
    assert_eq!((before.len(), after.len()), (per_batch * 4, per_batch * 4));
    let mut joined = ids(&after);
    joined.extend(ids(&before));
    assert_eq!(joined, ids(&all), "before + after is everything, in order");
    let narrow = count(format!(
        "{ok_base}?after={middle}&event_types=call.started&status_code_class=200"
    ))
    .await;
    assert_eq!(narrow, per_batch / 3);

    // Walking back from the third page gives the second page again.
    let first = app.get(&format!("{base}?limit=50")).await.1;
    let second = app
        .get(&format!(
            "{base}?limit=50&iterator={}",
            first["iterator"].as_str().unwrap()
        ))
        .await
        .1;
    let third = app
        .get(&format!(
            "{base}?limit=50&iterator={}",
            second["iterator"].as_str().unwrap()
        ))
        .await
        .1;
    let back = app
        .get(&format!(
            "{base}?limit=50&iterator={}",
            third["prevIterator"].as_str().unwrap()
        ))
        .await
        .1;
    assert_eq!(
        ids(back["data"].as_array().unwrap()),
        ids(second["data"].as_array().unwrap())
    );

    // Bad filters name the parameter.
    let (status, body) = app.get(&format!("{base}?status_code_class=250")).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        crate::helpers::detail_text(&body).starts_with("status_code_class"),
        "{body}"
    );
}

#[tokio::test]
async fn messages_can_be_listed_by_channel() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let mut vip = Vec::new();
    for n in 0..12 {
        let channels = match n % 3 {
            0 => json!(["vip", "eu"]),
            1 => json!(["v_p"]), // `_` must not act as a wildcard
            _ => json!(null),
        };
        let (status, message) = app
            .post(
                &format!("/app/{tenant}/msg/"),
                json!({"eventType": "call.started", "payload": {"n": n}, "channels": channels}),
            )
            .await;
        assert_eq!(status, 202, "{message}");
        if n % 3 == 0 {
            vip.push(message["id"].as_str().unwrap().to_owned());
        }
    }
    vip.reverse();

    let listed = walk(&app, &format!("/app/{tenant}/msg/?channel=vip"), 3).await;

    assert_eq!(ids(&listed), vip);
    assert_eq!(
        walk(&app, &format!("/app/{tenant}/msg/?channel=v_p"), 50)
            .await
            .len(),
        4
    );
    assert_eq!(
        walk(&app, &format!("/app/{tenant}/msg/?channel=eu"), 50)
            .await
            .len(),
        4
    );
    assert!(walk(&app, &format!("/app/{tenant}/msg/?channel=us"), 50)
        .await
        .is_empty());
}

#[tokio::test]
async fn an_attempt_shows_the_request_it_made_with_signature_and_credentials_masked() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let (status, endpoint) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": receiver.url("/hook"),
                   "headers": {"X-Tenant": "acme", "Authorization": "Bearer s3cr3t-value"}}),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let message = app
        .send(
            &tenant,
            "call.completed",
            json!({"callId": "call_9", "n": 1.50}),
        )
        .await;
    let received = receiver.wait_for(1, Duration::from_secs(10)).await[0].clone();
    // The receiver has it before the attempt is recorded.
    let attempts = eventually(Duration::from_secs(10), "the attempt", || async {
        let attempts = app.attempts_of(&tenant, &message).await;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    let id = attempts[0]["id"].as_str().unwrap();

    let (status, detail) = app
        .get(&format!("/app/{tenant}/msg/{message}/attempt/{id}/"))
        .await;

    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["id"], id, "the attempt's own fields stay");
    let request = &detail["request"];
    assert_eq!(request["body"], received.json(), "the body as sent");
    let headers = &request["headers"];
    for name in [
        "webhook-id",
        "webhook-timestamp",
        "svix-id",
        "svix-timestamp",
    ] {
        assert_eq!(headers[name], received.header(name).as_str(), "{name}");
    }
    // Custom headers are kept by their lower-case names, and were sent.
    assert_eq!(headers["x-tenant"], "acme", "{headers}");
    assert_eq!(received.header("x-tenant"), "acme");
    assert_eq!(headers["webhook-signature"], "<redacted>");
    assert!(!detail
        .to_string()
        .contains(&received.header("webhook-signature")));
    // A credential in a custom header was sent, and is masked here.
    assert_eq!(received.header("authorization"), "Bearer s3cr3t-value");
    assert_eq!(headers["authorization"], "<redacted>", "{headers}");
    assert!(!detail.to_string().contains("s3cr3t"), "{detail}");

    // Listings carry the same request when asked for, and none by default.
    for path in [
        format!("/app/{tenant}/attempt/msg/{message}/"),
        format!(
            "/app/{tenant}/attempt/endpoint/{}/",
            endpoint["id"].as_str().unwrap()
        ),
    ] {
        let (status, plain) = app.get(&path).await;
        assert_eq!(status, 200, "{plain}");
        assert!(plain["data"][0].get("request").is_none(), "{plain}");
        let (status, listed) = app.get(&format!("{path}?with_request=true")).await;
        assert_eq!(status, 200, "{listed}");
        assert_eq!(listed["data"][0]["request"], detail["request"], "{path}");
        assert!(!listed.to_string().contains("s3cr3t"), "{listed}");
    }
}
