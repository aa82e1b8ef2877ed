//! Per-endpoint filters, transformations, raw payloads and timeouts over
//! real HTTP, on SQLite (in process) and PostgreSQL (a `herald serve`
//! child): what each endpoint receives, signed; what is refused when saved;
//! an expression that blows its budget fails its attempts cleanly.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{
    detail_text, eventually, spawn_app, verifies, Receiver, Reply, Server, TestDatabase, TOKEN,
};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const SLACK: &str =
    r#"{"text": "Call " + data.callId + " completed in " + string(data.durationSeconds) + " s"}"#;

struct Api<'a> {
    base: String,
    client: &'a reqwest::Client,
}

impl Api<'_> {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn endpoint(&self, app: &str, body: Value) -> String {
        let (status, created) = self.post(&format!("/app/{app}/endpoint/"), body).await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }
}

/// `enforceSchema` on one event type: its bad messages are refused with
/// the failing paths named, its catalog example and other types' messages
/// are not.
async fn enforcement(api: &Api<'_>) {
    let (_, app) = api.post("/app/", json!({"name": "Strict"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    let path = format!("/app/{app}/msg/");
    let send = |event_type: &str, payload: Value| {
        api.post(&path, json!({"eventType": event_type, "payload": payload}))
    };
    let bad =
        json!({"callId": "call_9", "direction": "sideways", "reason": "aliens", "sipCode": "480"});
    assert_eq!(
        send("call.failed", bad.clone()).await.0,
        202,
        "not enforced yet"
    );
    let (status, patched) = api
        .call(
            reqwest::Method::PATCH,
            "/event-type/call.failed/",
            Some(json!({"enforceSchema": true})),
        )
        .await;
    assert_eq!(
        (status, &patched["enforceSchema"]),
        (200, &json!(true)),
        "{patched}"
    );
    let (status, refused) = send("call.failed", bad.clone()).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["code"], "validation_error");
    let items = refused["detail"].as_array().unwrap();
    let places: Vec<Value> = items.iter().map(|i| i["loc"].clone()).collect();
    for place in [
        json!(["body", "payload", "reason"]),
        json!(["body", "payload", "direction"]),
        json!(["body", "payload", "sipCode"]),
        json!(["body", "payload"]),
    ] {
        assert!(places.contains(&place), "{place} in {refused}");
    }
    assert!(
        items.iter().any(|i| i["msg"]
            .as_str()
            .unwrap()
            .contains("\"from\" is a required property")),
        "{refused}"
    );
    // Nothing was written: the message list holds the one accepted before.
    let (_, listed) = api
        .call(reqwest::Method::GET, &format!("/app/{app}/msg/"), None)
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    let example = herald_domain::catalog::builtin()
        .into_iter()
        .find(|e| e.name == "call.failed")
        .unwrap()
        .example;
    assert_eq!(send("call.failed", example).await.0, 202);
    assert_eq!(
        send("call.completed", bad).await.0,
        202,
        "call.completed is not enforced"
    );
    // A type without a schema cannot enforce one.
    let (status, error) = api
        .post(
            "/event-type/",
            json!({"name": "bare.event", "description": "no schema", "enforceSchema": true}),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert!(detail_text(&error).contains("enforceSchema"), "{error}");
}

async fn shaping(api: Api<'_>) {
    enforcement(&api).await;
    let receiver = Receiver::start().await;
    receiver.always("/slow", Reply::Delay(Duration::from_secs(3)));
    let (_, app) = api.post("/app/", json!({"name": "Shaping"})).await;
    let app = app["id"].as_str().unwrap().to_owned();

    // Mistakes are refused when saved, with the parser's words.
    for (body, field, said) in [
        (
            json!({"filter": "data.direction =="}),
            "filter",
            "syntax error",
        ),
        (
            json!({"filter": "direction == 'inbound'"}),
            "filter",
            "unknown name `direction`",
        ),
        (
            json!({"transformation": "{'text': exec()}"}),
            "transformation",
            "unknown function",
        ),
        (
            json!({"transformation": "data", "rawPayload": true}),
            "rawPayload",
            "cannot be combined",
        ),
        (
            json!({"filter": format!("{}true{}", "(".repeat(100), ")".repeat(100))}),
            "filter",
            "nests brackets",
        ),
        (
            json!({"filter": format!("{}1 == 2", "1 + ".repeat(80))}),
            "filter",
            "levels deep",
        ),
        (json!({"timeout": 0}), "timeout", "between 1 and"),
        (json!({"timeout": 100_000}), "timeout", "between 1 and"),
    ] {
        let mut body = body;
        body["url"] = json!(receiver.url("/refused"));
        let (status, error) = api
            .post(&format!("/app/{app}/endpoint/"), body.clone())
            .await;
        assert_eq!(status, 422, "{body}: {error}");
        let detail = detail_text(&error);
        assert!(
            detail.contains(field) && detail.contains(said),
            "{body}: {detail}"
        );
    }

    let inbound = api
        .endpoint(
            &app,
            json!({"url": receiver.url("/inbound"), "filter": "data.direction == \"inbound\""}),
        )
        .await;
    let slack = api
        .endpoint(
            &app,
            json!({"url": receiver.url("/slack"), "secret": SECRET, "transformation": SLACK}),
        )
        .await;
    api.endpoint(
        &app,
        json!({"url": receiver.url("/raw"), "rawPayload": true}),
    )
    .await;
    let greedy = api
        .endpoint(
            &app,
            json!({"url": receiver.url("/greedy"),
                   "transformation": "{'pairs': data.items.map(x, data.items.map(y, x * y))}"}),
        )
        .await;
    let slow = api
        .endpoint(&app, json!({"url": receiver.url("/slow"), "timeout": 1}))
        .await;
    // A filter that would build 20 MB of strings for the inbound call's
    // thousand items spends its budget: the call is kept out; the outbound
    // call's one item passes.
    api.endpoint(
        &app,
        json!({"url": receiver.url("/exploding"),
               "filter": "data.items.map(x, data.pad + data.pad).size() > 0"}),
    )
    .await;
    let (status, read) = api
        .call(
            reqwest::Method::GET,
            &format!("/app/{app}/endpoint/{slack}/"),
            None,
        )
        .await;
    assert_eq!(
        (status, read["transformation"].as_str()),
        (200, Some(SLACK))
    );
    let (_, read) = api
        .call(
            reqwest::Method::GET,
            &format!("/app/{app}/endpoint/{slow}/"),
            None,
        )
        .await;
    assert_eq!(
        (read["timeout"].as_u64(), read["rawPayload"].as_bool()),
        (Some(1), Some(false))
    );

    let items: Vec<u32> = (0..1000).collect();
    let pad = "x".repeat(10_000);
    let inbound_call = json!({"callId": "call_in", "direction": "inbound", "durationSeconds": 42,
                              "items": items, "pad": pad});
    let outbound_call = json!({"callId": "call_out", "direction": "outbound", "durationSeconds": 7,
                               "items": [1], "pad": pad});
    for payload in [&inbound_call, &outbound_call] {
        let (status, sent) = api
            .post(
                &format!("/app/{app}/msg/"),
                json!({"eventType": "call.completed", "payload": payload}),
            )
            .await;
        assert_eq!(status, 202, "{sent}");
    }

    // The filtered endpoint gets the inbound call only.
    let secret = herald_domain::Secret::parse(SECRET).unwrap();
    let slack_bodies = eventually(Duration::from_secs(20), "two Slack bodies", || {
        let got = receiver.requests_to("/slack");
        async move { (got.len() >= 2).then_some(got) }
    })
    .await;
    let mut texts: Vec<Value> = slack_bodies
        .iter()
        .map(|r| {
            assert!(verifies(r, &secret), "the transformed body is signed");
            r.json()
        })
        .collect();
    texts.sort_by_key(|v| v.to_string());
    assert_eq!(
        texts,
        vec![
            json!({"text": "Call call_in completed in 42 s"}),
            json!({"text": "Call call_out completed in 7 s"}),
        ]
    );
    let raw = eventually(Duration::from_secs(20), "two raw bodies", || {
        let got = receiver.requests_to("/raw");
        async move { (got.len() >= 2).then_some(got) }
    })
    .await;
    let mut raw: Vec<Value> = raw.iter().map(|r| r.json()).collect();
    raw.sort_by_key(|v| v["callId"].to_string());
    assert_eq!(raw, vec![inbound_call.clone(), outbound_call.clone()]);
    let got = receiver.requests_to("/inbound");
    assert_eq!(got.len(), 1, "only the inbound call");
    let exploding = eventually(Duration::from_secs(20), "the outbound call", || {
        let got = receiver.requests_to("/exploding");
        async move { (!got.is_empty()).then_some(got) }
    })
    .await;
    assert_eq!(exploding[0].json()["data"]["callId"], "call_out");
    assert_eq!(got[0].json()["data"]["callId"], "call_in");
    assert_eq!(got[0].json()["type"], "call.completed");

    // The greedy transformation fails the inbound call's attempts (a
    // thousand squared steps) with its own class, and sends nothing for it;
    // the outbound call's one-element list goes through.
    let failures = eventually(
        Duration::from_secs(20),
        "the greedy endpoint's attempts",
        || {
            let api = &api;
            let (app, greedy) = (&app, &greedy);
            async move {
                let (_, page) = api
                    .call(
                        reqwest::Method::GET,
                        &format!("/app/{app}/attempt/endpoint/{greedy}/"),
                        None,
                    )
                    .await;
                let failed: Vec<Value> = page["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| !a["errorClass"].is_null())
                    .cloned()
                    .collect();
                (failed.len() >= 2).then_some(failed)
            }
        },
    )
    .await;
    for attempt in &failures {
        assert_eq!(attempt["errorClass"], "transformation", "{attempt}");
        assert_eq!(attempt["responseStatusCode"], 0, "{attempt}");
        // Stopped by its budget, or (a debug build on a busy machine) by
        // its deadline first.
        let why = attempt["response"].as_str().unwrap_or_default();
        assert!(
            why.contains("budget") || why.contains("deadline"),
            "{attempt}"
        );
    }
    let greedy_got = receiver.requests_to("/greedy");
    assert_eq!(greedy_got.len(), 1, "only the outbound call was sent");
    assert_eq!(greedy_got[0].json(), json!({"pairs": [[1]]}));

    // The endpoint's own timeout (1 s) cuts the 3 s receiver short.
    let timed_out = eventually(
        Duration::from_secs(20),
        "the slow endpoint's attempt",
        || {
            let api = &api;
            let (app, slow) = (&app, &slow);
            async move {
                let (_, page) = api
                    .call(
                        reqwest::Method::GET,
                        &format!("/app/{app}/attempt/endpoint/{slow}/"),
                        None,
                    )
                    .await;
                page["data"].as_array().and_then(|d| d.first().cloned())
            }
        },
    )
    .await;
    assert_eq!(timed_out["errorClass"], "timeout", "{timed_out}");
    assert!(
        timed_out["responseDurationMs"].as_u64().unwrap() < 2_500,
        "{timed_out}"
    );

    assert_eq!(
        receiver.requests_to("/exploding").len(),
        1,
        "the inbound call was kept out"
    );

    // The outbound call was never fanned out to the filtered endpoint:
    // nothing waits for it there either.
    let (_, page) = api
        .call(
            reqwest::Method::GET,
            &format!("/app/{app}/attempt/endpoint/{inbound}/"),
            None,
        )
        .await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{page}");
}

/// `HERALD_ENFORCE_SCHEMAS=true`: every type's schema is enforced, and
/// every example of the catalog passes its own.
#[tokio::test]
async fn the_server_wide_option_enforces_every_schema_and_the_catalog_passes() {
    let data = tempfile::tempdir().unwrap();
    let mut env = crate::helpers::sqlite_env(data.path());
    env.push(("HERALD_ENFORCE_SCHEMAS", "true".into()));
    let server = Server::start(&env);
    let client = reqwest::Client::new();
    let api = Api {
        base: format!("http://{}", server.address),
        client: &client,
    };
    let (_, app) = api.post("/app/", json!({"name": "Strict"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    for entry in herald_domain::catalog::builtin() {
        let (status, sent) = api
            .post(
                &format!("/app/{app}/msg/"),
                json!({"eventType": entry.name, "payload": entry.example}),
            )
            .await;
        assert_eq!(status, 202, "{}: {sent}", entry.name);
    }
    let (status, refused) = api
        .post(
            &format!("/app/{app}/msg/"),
            json!({"eventType": "call.completed", "payload": {"callId": 7}}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["detail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["loc"] == json!(["body", "payload", "callId"])),
        "{refused}"
    );
    server.terminate();
}

#[tokio::test]
async fn filters_transformations_raw_payloads_and_timeouts_on_sqlite() {
    let app = spawn_app().await;
    shaping(Api {
        base: format!("http://{}", app.address),
        client: &app.client,
    })
    .await;
}

#[tokio::test]
async fn filters_transformations_raw_payloads_and_timeouts_on_postgres() {
    let _shared = crate::helpers::POSTGRES.read().await;
    let Some(database) = TestDatabase::create("filters and transformations on PostgreSQL").await
    else {
        return;
    };
    let server = Server::start(&database.env());
    let client = reqwest::Client::new();
    shaping(Api {
        base: format!("http://{}", server.address),
        client: &client,
    })
    .await;
    // The server's own process counted its filters' decisions.
    let metrics = server.metrics(&client).await;
    let count = |outcome: &str| -> u64 {
        let prefix = format!("herald_filter_evaluations_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {outcome} count in {metrics}"))
    };
    // Inbound call: `/inbound` and `/exploding` (stopped by its budget)
    // decide; outbound call: both again.
    assert!(count("passed") >= 2, "{metrics}");
    assert!(count("filtered_out") >= 1, "{metrics}");
    assert!(count("stopped") >= 1, "{metrics}");
    server.terminate();
    database.drop_database().await;
}

#[tokio::test]
async fn an_endpoint_s_transformation_is_read_and_changed_through_svix_s_routes() {
    let app = crate::helpers::spawn_app().await;
    let receiver = crate::helpers::Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/slack"), None)
        .await;
    let path = format!("/app/{tenant}/endpoint/{endpoint}/transformation/");
    let patch = |body: Value| app.request(reqwest::Method::PATCH, &path, Some(body));

    let (_, none) = app.get(&path).await;
    let code = r#"{"text": "Call " + data.callId}"#;
    let (status, set) = patch(json!({"code": code})).await;
    let (_, read) = app.get(&path).await;
    app.send(&tenant, "call.completed", json!({"callId": "c1"}))
        .await;
    let sent = receiver
        .wait_for(1, std::time::Duration::from_secs(10))
        .await;
    let (javascript, error) =
        patch(json!({"code": "function handler(webhook) { return webhook }"})).await;
    let (both, _) = patch(json!({"code": code, "enabled": false})).await;
    let (variables, _) = patch(json!({"variables": {"a": "b"}})).await;
    let (removed, off) = patch(json!({"enabled": false})).await;
    let (nothing, _) = patch(json!({"enabled": true})).await;

    assert_eq!(
        none,
        json!({"code": null, "enabled": false, "updatedAt": none["updatedAt"]})
    );
    assert_eq!(status, 200, "{set}");
    assert_eq!(read["code"], code);
    assert_eq!(read["enabled"], true);
    assert_eq!(
        sent[0].json(),
        json!({"text": "Call c1"}),
        "it takes effect"
    );
    assert_eq!(javascript, 422, "Herald's transformations are CEL: {error}");
    assert_eq!(both, 422, "no disabled transformation is kept");
    assert_eq!(variables, 422, "variables are refused");
    assert_eq!(removed, 200);
    assert_eq!(off["enabled"], false);
    assert_eq!(off["code"], Value::Null);
    assert_eq!(nothing, 422, "nothing to enable");
}
