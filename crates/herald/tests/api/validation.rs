//! Bad input, authentication and tenant isolation: every refusal is a 4xx
//! with a `code`, and nothing half-written remains.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Options, TOKEN};

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_code_and_leaves_nothing_behind() {
    let app = spawn_app_with(Options {
        allow_private_networks: false,
        ..Options::default()
    })
    .await;
    let tenant = app.create_app("Acme").await;
    let endpoints = format!("/app/{tenant}/endpoint/");
    let messages = format!("/app/{tenant}/msg/");
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "missing url",
            &endpoints,
            json!({"description": "x"}),
            422,
            "validation_error",
        ),
        (
            "ftp url",
            &endpoints,
            json!({"url": "ftp://example.com/x"}),
            422,
            "validation_error",
        ),
        (
            "private ip",
            &endpoints,
            json!({"url": "http://10.0.0.1/hook"}),
            422,
            "validation_error",
        ),
        (
            "loopback ip",
            &endpoints,
            json!({"url": "http://127.0.0.1:8080/hook"}),
            422,
            "validation_error",
        ),
        (
            "metadata ip",
            &endpoints,
            json!({"url": "http://169.254.169.254/latest"}),
            422,
            "validation_error",
        ),
        (
            "unknown filter type",
            &endpoints,
            json!({"url": "https://example.com/x", "filterTypes": ["call.exploded"]}),
            422,
            "validation_error",
        ),
        (
            "unknown group",
            &endpoints,
            json!({"url": "https://example.com/x", "filterTypes": ["robot.*"]}),
            422,
            "validation_error",
        ),
        (
            "bad secret",
            &endpoints,
            json!({"url": "https://example.com/x", "secret": "not-a-secret"}),
            422,
            "validation_error",
        ),
        (
            "forbidden header",
            &endpoints,
            json!({"url": "https://example.com/x", "headers": {"webhook-id": "x"}}),
            422,
            "validation_error",
        ),
        (
            "missing eventType",
            &messages,
            json!({"payload": {}}),
            422,
            "validation_error",
        ),
        (
            "unknown eventType",
            &messages,
            json!({"eventType": "call.exploded", "payload": {}}),
            422,
            "validation_error",
        ),
        (
            "payload not an object",
            &messages,
            json!({"eventType": "call.started", "payload": [1]}),
            422,
            "validation_error",
        ),
        (
            "bad eventId",
            &messages,
            json!({"eventType": "call.started", "payload": {}, "eventId": "has space"}),
            422,
            "validation_error",
        ),
        (
            "app without name",
            "/app/",
            json!({"uid": "x"}),
            422,
            "validation_error",
        ),
    ];
    for (why, path, body, status, code) in cases {
        let (got, error) = app.post(path, body).await;
        assert_eq!(got, status, "{why}: {error}");
        assert_eq!(error["code"], code, "{why}: {error}");
        assert!(
            !crate::helpers::detail_text(&error).is_empty(),
            "{why}: detail"
        );
    }
    let missing_field = app.post(&endpoints, json!({})).await.1;
    assert!(
        crate::helpers::detail_text(&missing_field).contains("url"),
        "the detail names the field"
    );

    let malformed = app
        .client
        .post(app.url(&messages))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"eventType\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let error: Value = malformed.json().await.unwrap();
    assert_eq!(error["code"], "invalid_json");

    let (_, listed) = app.get(&endpoints).await;
    assert_eq!(listed["data"], json!([]), "no endpoint was half-created");
    let (_, listed) = app.get(&messages).await;
    assert_eq!(listed["data"], json!([]), "no message was half-created");
    let (_, apps) = app.get("/app/").await;
    assert_eq!(customer_apps(&apps), 1, "only the one app exists");
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let big = "x".repeat(1024 * 1024 + 1);

    let (status, error) = app
        .post(
            &format!("/app/{tenant}/msg/"),
            json!({"eventType": "call.started", "payload": {"big": big}}),
        )
        .await;

    assert_eq!(status, 413, "{error}");
    assert_eq!(error["code"], "payload_too_large");
    let (_, listed) = app.get(&format!("/app/{tenant}/msg/")).await;
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_on_every_route() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let routes = [
        (Method::GET, "/app/".to_owned()),
        (Method::POST, "/app/".to_owned()),
        (Method::GET, format!("/app/{tenant}/")),
        (Method::DELETE, format!("/app/{tenant}/")),
        (Method::GET, "/event-type/".to_owned()),
        (Method::GET, format!("/app/{tenant}/endpoint/")),
        (Method::POST, format!("/app/{tenant}/msg/")),
        (Method::GET, format!("/app/{tenant}/msg/")),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong-token-wrong-token")] {
            let mut request = app.client.request(method.clone(), app.url(&path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.json(&json!({"name": "x"})).send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["code"], "authentication_failed");
        }
    }
    let (_, apps) = app.get("/app/").await;
    assert_eq!(customer_apps(&apps), 1, "nothing was created");
}

#[tokio::test]
async fn ids_of_another_app_are_not_found() {
    let app = spawn_app().await;
    let mine = app.create_app("Mine").await;
    let theirs = app.create_app("Theirs").await;
    let their_endpoint = app
        .create_endpoint(&theirs, "http://127.0.0.1:9/x", None)
        .await;
    let their_message = app.send(&theirs, "call.started", json!({})).await;

    for path in [
        format!("/app/{mine}/endpoint/{their_endpoint}/"),
        format!("/app/{mine}/endpoint/{their_endpoint}/secret/"),
        format!("/app/{mine}/endpoint/{their_endpoint}/stats/"),
        format!("/app/{mine}/msg/{their_message}/"),
        format!("/app/{mine}/attempt/msg/{their_message}/"),
        format!("/app/{mine}/attempt/endpoint/{their_endpoint}/"),
    ] {
        let (status, error) = app.get(&path).await;
        assert_eq!(status, 404, "{path}: {error}");
        assert_eq!(error["code"], "not_found");
    }
    let (status, _) = app
        .post(
            &format!("/app/{mine}/msg/{their_message}/endpoint/{their_endpoint}/resend/"),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .request(
            Method::DELETE,
            &format!("/app/{mine}/endpoint/{their_endpoint}/"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .get(&format!("/app/{theirs}/endpoint/{their_endpoint}/"))
        .await;
    assert_eq!(status, 200, "the endpoint is still there for its owner");
}

#[tokio::test]
async fn apps_endpoints_and_event_types_support_crud_with_uids() {
    let app = spawn_app().await;
    let (status, created) = app
        .post("/app/", json!({"name": "Acme", "uid": "acme"}))
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .post("/app/", json!({"name": "Again", "uid": "acme"}))
        .await;
    assert_eq!(status, 409, "uids are unique");
    let (status, by_uid) = app.get("/app/acme/").await;
    assert_eq!((status, &by_uid["id"]), (200, &created["id"]));
    let (status, patched) = app
        .request(
            Method::PATCH,
            "/app/acme/",
            Some(json!({"name": "Acme Corp"})),
        )
        .await;
    assert_eq!((status, patched["name"].as_str()), (200, Some("Acme Corp")));

    let (status, endpoint) = app
        .post(
            "/app/acme/endpoint/",
            json!({"url": "https://example.com/hook", "uid": "crm", "filterTypes": ["call.*"],
                   "headers": {"X-Api-Key": "k"}}),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let (_, headers) = app.get("/app/acme/endpoint/crm/headers/").await;
    assert_eq!(headers["headers"]["x-api-key"], "k");
    let (status, updated) = app
        .request(
            Method::PATCH,
            "/app/acme/endpoint/crm/",
            Some(json!({"disabled": true, "filterTypes": null})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["disabled"], true);
    assert_eq!(updated["filterTypes"], Value::Null);
    let (status, _) = app
        .request(Method::DELETE, "/app/acme/endpoint/crm/", None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = app.get("/app/acme/endpoint/crm/").await;
    assert_eq!(status, 404);

    let (_, catalog) = app.get("/event-type/?limit=100").await;
    assert_eq!(
        catalog["data"].as_array().unwrap().len(),
        12 + 5,
        "the seeded catalog and Herald's operational events"
    );
    let completed = catalog["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "call.completed")
        .unwrap();
    assert!(
        completed["schemas"]["1"]["examples"][0]["callId"].is_string(),
        "schema with example"
    );
    let (status, _) = app
        .post(
            "/event-type/",
            json!({"name": "ticket.opened", "description": "A ticket was opened."}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .request(Method::DELETE, "/event-type/ticket.opened/", None)
        .await;
    assert_eq!(status, 204);
    let (_, archived) = app.get("/event-type/ticket.opened/").await;
    assert_eq!(archived["archived"], true, "delete archives");

    let (status, _) = app.request(Method::DELETE, "/app/acme/", None).await;
    assert_eq!(status, 204);
    let (status, _) = app.get("/app/acme/").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn lists_page_with_iterators() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(app.send(&tenant, "call.started", json!({"n": n})).await);
    }
    let (_, first) = app.get(&format!("/app/{tenant}/msg/?limit=2")).await;
    let (_, second) = app
        .get(&format!(
            "/app/{tenant}/msg/?limit=2&iterator={}",
            first["iterator"].as_str().unwrap()
        ))
        .await;
    let (_, third) = app
        .get(&format!(
            "/app/{tenant}/msg/?limit=2&iterator={}",
            second["iterator"].as_str().unwrap()
        ))
        .await;
    let ids: Vec<_> = [&first, &second, &third]
        .iter()
        .flat_map(|page| {
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
        })
        .collect();
    sent.reverse();
    assert_eq!(ids, sent, "newest first, each message once");
    assert_eq!(
        (first["done"].as_bool(), third["done"].as_bool()),
        (Some(false), Some(true))
    );
    let (_, back) = app
        .get(&format!(
            "/app/{tenant}/msg/?limit=2&iterator={}",
            second["prevIterator"].as_str().unwrap()
        ))
        .await;
    assert_eq!(back["data"], first["data"], "prevIterator walks back");
}

#[tokio::test]
async fn health_answers_without_a_token() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/health/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_refused_at_connect_time() {
    let app = spawn_app_with(Options {
        allow_private_networks: false,
        retry_schedule: "",
        ..Options::default()
    })
    .await;
    let receiver = crate::helpers::Receiver::start().await;
    // The machine's own name resolves to a loopback address here (/etc/hosts);
    // unlike `localhost` it passes the save-time check, like a rebinding name.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let hostname = hostname.trim();
    let resolved: Vec<_> = tokio::net::lookup_host((hostname, 80))
        .await
        .map(|found| found.collect())
        .unwrap_or_default();
    if hostname.is_empty()
        || resolved.is_empty()
        || resolved
            .iter()
            .any(|a| herald_domain::net::is_public(a.ip()))
    {
        crate::helpers::skip_or_fail(
            "the rebinding-name test",
            &format!("the host name {hostname:?} does not resolve only to private addresses here"),
        );
        return;
    }
    let tenant = app.create_app("Acme").await;
    let url = format!("http://{hostname}:{}/hook", receiver.address.port());
    app.create_endpoint(&tenant, &url, None).await;

    let message = app.send(&tenant, "call.started", json!({})).await;

    let attempt = crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "the attempt",
        || async { app.attempts_of(&tenant, &message).await.into_iter().next() },
    )
    .await;
    assert_eq!(attempt["errorClass"], "forbidden_address", "{attempt}");
    assert!(
        receiver.requests().is_empty(),
        "nothing reached the private address"
    );
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_get_503_at_once() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(Options {
        max_concurrent_requests: 1,
        ..Options::default()
    })
    .await;
    let tenant = app.create_app("Acme").await;
    // Hold the only slot with a request whose body never finishes arriving.
    let mut held = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST /api/v1/app/{tenant}/msg/ HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"eventType\""
    );
    held.write_all(head.as_bytes()).await.unwrap();

    let refused =
        crate::helpers::eventually(std::time::Duration::from_secs(10), "a 503", || async {
            let response = app
                .client
                .get(app.url("/app/"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            (response.status() == 503).then_some(response)
        })
        .await;

    assert_eq!(refused.headers()["retry-after"], "1");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["code"], "overloaded");
    drop(held);
    crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "the slot back",
        || async { (app.get("/app/").await.0 == 200).then_some(()) },
    )
    .await;
}

/// Apps in a listing, leaving out Herald's own operations app.
fn customer_apps(listing: &Value) -> usize {
    listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|app| app["uid"] != "herald-operations")
        .count()
}

#[tokio::test]
async fn the_built_in_operations_app_cannot_be_deleted() {
    let app = spawn_app().await;
    let (status, body) = app
        .request(Method::DELETE, "/app/herald-operations/", None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "conflict");
    assert_eq!(app.get("/app/herald-operations/").await.0, 200);
    // Other apps still can be.
    let other = app.create_app("Scratch").await;
    let (status, _) = app
        .request(Method::DELETE, &format!("/app/{other}/"), None)
        .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/app/{tenant}/alert-rules/"),
            "[null, null]",
        ),
        (
            Method::POST,
            format!("/app/{tenant}/msg/"),
            "\"call.completed\"",
        ),
        (Method::POST, "/app/".to_owned(), "42"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{method} {path} {body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(
            crate::helpers::detail_text(&error),
            "body: must be a JSON object",
            "{error}"
        );
    }
}

#[tokio::test]
async fn json_bodies_need_a_json_content_type() {
    let app = spawn_app().await;
    for (content_type, status) in [
        ("application/json", 201),
        ("Application/JSON; charset=utf-8", 201),
        ("application/vnd.herald+json", 201),
        ("text/plain", 400),
        ("application/xml", 400),
        ("json", 400),
    ] {
        let response = app
            .client
            .post(app.url("/app/"))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(r#"{"name": "Acme"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{content_type}");
        if status == 400 {
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["code"], "invalid_content_type", "{content_type}");
        }
    }
}

#[tokio::test]
async fn an_endpoint_whose_url_a_tightened_policy_refuses_can_still_be_disabled_and_edited() {
    let data_dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    // Saved while http and loopback were allowed.
    let server = crate::helpers::Server::start(&crate::helpers::sqlite_env(data_dir.path()));
    let tenant = server.post(&client, "/app/", json!({"name": "Acme"})).await;
    let tenant = tenant["id"].as_str().unwrap().to_owned();
    let endpoint = server
        .post(
            &client,
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    let endpoint = endpoint["id"].as_str().unwrap().to_owned();
    server.terminate();
    // The operator tightens the policy.
    let mut env = crate::helpers::sqlite_env(data_dir.path());
    env.push(("HERALD_ALLOW_HTTP", "false".into()));
    env.push(("HERALD_ALLOW_PRIVATE_NETWORKS", "false".into()));
    let server = crate::helpers::Server::start(&env);
    let path = format!(
        "http://{}/api/v1/app/{tenant}/endpoint/{endpoint}/",
        server.address
    );
    let call = |method: reqwest::Method, body: Value| {
        client
            .request(method, &path)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };

    let disabled = call(reqwest::Method::PATCH, json!({"disabled": true}))
        .await
        .unwrap();
    let disabled_status = disabled.status();
    let disabled: Value = disabled.json().await.unwrap();
    let described = call(
        reqwest::Method::PUT,
        json!({"url": "http://127.0.0.1:9/hook", "description": "kept", "disabled": true}),
    )
    .await
    .unwrap();
    let described_status = described.status();
    let moved = call(
        reqwest::Method::PATCH,
        json!({"url": "http://127.0.0.1:10/hook"}),
    )
    .await
    .unwrap();
    let moved_status = moved.status();
    let moved: Value = moved.json().await.unwrap();

    assert_eq!(disabled_status, 200, "{disabled}");
    assert_eq!(disabled["disabled"], true);
    assert_eq!(
        described_status, 200,
        "an unchanged URL is not checked again"
    );
    assert_eq!(moved_status, 422, "a new URL is: {moved}");
    assert!(
        crate::helpers::detail_text(&moved).starts_with("url:"),
        "{moved}"
    );
}

#[tokio::test]
async fn endpoint_channels_are_validated_like_message_channels() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let eleven: Vec<String> = (0..11).map(|n| format!("c{n}")).collect();
    let cases = [
        (json!(["has space"]), 422, "a channel that is not a uid"),
        (json!([""]), 422, "an empty channel"),
        (json!(eleven), 422, "more than 10 channels"),
        (json!(["project-1", "team.a"]), 201, "valid channels"),
    ];
    for (channels, expected, why) in cases {
        let (status, body) = app
            .post(
                &format!("/app/{tenant}/endpoint/"),
                json!({"url": "https://hooks.test/x", "channels": channels}),
            )
            .await;
        assert_eq!(status, expected, "{why}: {body}");
    }
    let (_, list) = app.get(&format!("/app/{tenant}/endpoint/")).await;
    let endpoint = list["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .request(
            Method::PATCH,
            &format!("/app/{tenant}/endpoint/{endpoint}/"),
            Some(json!({"channels": ["no/slash"]})),
        )
        .await;
    assert_eq!(status, 422, "a patch is checked too: {body}");
}

#[tokio::test]
async fn a_field_herald_does_not_know_is_refused_with_its_name_on_every_body() {
    let app = spawn_app().await;
    let receiver = crate::helpers::Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let hook = receiver.url("/hook");
    let cases: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/app/".into(),
            json!({"name": "X", "bogusField": 1}),
        ),
        (
            Method::PATCH,
            format!("/app/{tenant}/"),
            json!({"bogusField": 1}),
        ),
        (
            Method::PUT,
            format!("/app/{tenant}/"),
            json!({"name": "X", "bogusField": 1}),
        ),
        (
            Method::POST,
            format!("/app/{tenant}/endpoint/"),
            json!({"url": hook, "bogusField": 1}),
        ),
        (
            Method::PATCH,
            format!("/app/{tenant}/endpoint/{endpoint}/"),
            json!({"bogusField": 1}),
        ),
        (
            Method::PUT,
            format!("/app/{tenant}/endpoint/{endpoint}/"),
            json!({"url": hook, "bogusField": 1}),
        ),
        (
            Method::PUT,
            format!("/app/{tenant}/endpoint/{endpoint}/headers/"),
            json!({"headers": {}, "bogusField": 1}),
        ),
        (
            Method::POST,
            format!("/app/{tenant}/endpoint/{endpoint}/secret/rotate/"),
            json!({"bogusField": 1}),
        ),
        (
            Method::POST,
            format!("/app/{tenant}/endpoint/{endpoint}/send-example/"),
            json!({"eventType": "call.started", "bogusField": 1}),
        ),
        (
            Method::POST,
            format!("/app/{tenant}/msg/"),
            json!({"eventType": "call.started", "payload": {}, "bogusField": 1}),
        ),
        (
            Method::POST,
            "/event-type/".into(),
            json!({"name": "x.y", "description": "d", "bogusField": 1}),
        ),
        (
            Method::PUT,
            "/event-type/x.y/".into(),
            json!({"description": "d", "bogusField": 1}),
        ),
        (
            Method::PATCH,
            "/event-type/call.started/".into(),
            json!({"bogusField": 1}),
        ),
        (
            Method::POST,
            format!("/auth/app-portal-access/{tenant}/"),
            json!({"bogusField": 1}),
        ),
        // Svix fields Herald does not (yet) do are refused, not dropped.
        (
            Method::POST,
            format!("/app/{tenant}/msg/"),
            json!({"eventType": "call.started", "payload": {}, "tags": ["a"]}),
        ),
    ];
    for (method, path, body) in cases {
        let (status, error) = app.request(method.clone(), &path, Some(body.clone())).await;
        let field = body
            .as_object()
            .unwrap()
            .keys()
            .find(|k| ["bogusField", "tags"].contains(&k.as_str()))
            .unwrap()
            .clone();
        assert_eq!(status, 422, "{method} {path}: {error}");
        assert!(
            crate::helpers::detail_text(&error).contains(&field),
            "{method} {path}: the answer names `{field}`: {error}"
        );
    }
    let (_, list) = app.get(&format!("/app/{tenant}/msg/")).await;
    assert_eq!(list["data"], json!([]), "no refused message was stored");
}

#[tokio::test]
async fn event_types_and_throttle_rate_are_svix_sdk_2_names_for_filter_types_and_rate_limit() {
    let app = spawn_app().await;
    let receiver = crate::helpers::Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoints = format!("/app/{tenant}/endpoint/");

    let (status, made) = app
        .post(
            &endpoints,
            json!({"url": receiver.url("/crm"), "eventTypes": ["call.completed"], "throttleRate": 7}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["filterTypes"], json!(["call.completed"]));
    assert_eq!(made["rateLimit"], 7);
    let (status, same) = app
        .post(
            &endpoints,
            json!({"url": receiver.url("/b"), "eventTypes": ["call.started"], "filterTypes": ["call.started"]}),
        )
        .await;
    assert_eq!(status, 201, "the same value under both names: {same}");
    let (status, error) = app
        .post(
            &endpoints,
            json!({"url": receiver.url("/c"), "eventTypes": ["call.started"], "filterTypes": ["call.failed"]}),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert!(
        crate::helpers::detail_text(&error).contains("eventTypes"),
        "{error}"
    );
    let id = made["id"].as_str().unwrap();
    let (status, patched) = app
        .request(
            Method::PATCH,
            &format!("/app/{tenant}/endpoint/{id}/"),
            Some(json!({"eventTypes": ["call.failed"], "throttleRate": 3})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["filterTypes"], json!(["call.failed"]));
    assert_eq!(patched["rateLimit"], 3);
    let (status, renamed) = app
        .request(
            Method::PATCH,
            &format!("/app/{tenant}/"),
            Some(json!({"throttleRate": 50})),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["rateLimit"], 50);

    // The subscription takes effect: decided when each message is stored.
    let contact = app
        .send(&tenant, "contact.created", json!({"contactId": "c1"}))
        .await;
    let call = app
        .send(&tenant, "call.failed", json!({"callId": "k1"}))
        .await;
    let destinations = |message: String| {
        let app = &app;
        let tenant = &tenant;
        async move {
            let (_, list) = app
                .get(&format!("/app/{tenant}/msg/{message}/endpoint/"))
                .await;
            list["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        destinations(contact).await,
        Vec::<String>::new(),
        "nobody takes contact.created"
    );
    assert_eq!(
        destinations(call).await,
        vec![id.to_owned()],
        "only the CRM takes call.failed"
    );
}

#[tokio::test]
async fn a_query_parameter_herald_does_not_do_is_refused_with_its_name() {
    let app = spawn_app().await;
    let receiver = crate::helpers::Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let message = app.send(&tenant, "call.started", json!({})).await;
    let refused = [
        (format!("/app/{tenant}/msg/?tag=vip"), "tag"),
        (
            format!("/app/{tenant}/endpoint/{endpoint}/msg/?tag=vip"),
            "tag",
        ),
        (
            format!("/app/{tenant}/attempt/endpoint/{endpoint}/?tag=vip"),
            "tag",
        ),
        (
            format!("/app/{tenant}/attempt/endpoint/{endpoint}/?channel=c"),
            "channel",
        ),
        (
            format!("/app/{tenant}/attempt/msg/{message}/?endpoint_id={endpoint}"),
            "endpoint_id",
        ),
        (
            format!("/app/{tenant}/attempt/msg/{message}/?with_msg=true"),
            "with_msg",
        ),
        ("/background-task/?order=ascending".to_owned(), "order"),
    ];
    for (path, field) in refused {
        let (status, error) = app.get(&path).await;
        assert_eq!(status, 422, "{path}: {error}");
        assert!(
            crate::helpers::detail_text(&error).contains(field)
                || error.to_string().contains(field),
            "{path}: {error}"
        );
    }
    // What Svix's SDK 2 sends by default is taken.
    for path in [
        format!("/app/{tenant}/attempt/msg/{message}/?with_content=false&expanded_statuses=true"),
        format!(
            "/app/{tenant}/endpoint/{endpoint}/msg/?with_content=false&expanded_statuses=false"
        ),
        "/background-task/?order=descending".to_owned(),
    ] {
        let (status, answer) = app.get(&path).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
}
