//! Tenant isolation (SPEC §4): every route, tried with every kind of token.
//! An app-scoped token reaches its own app only; another app's data is
//! "not found", never "forbidden", and never appears in an answer.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app, Receiver, TestApp, TOKEN};

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Admin, or a token of the app in the path.
    Tenant,
    /// Admin only (server-wide or token-minting routes).
    Admin,
    /// Any valid token (the global event catalog, read-only).
    Catalog,
}

/// The token kinds of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Nobody,
    Expired,
    Revoked,
    OtherApp,
    SameApp,
    Portal,
    /// A portal token issued with `readOnly: true`.
    ReadOnlyPortal,
    Admin,
}

impl Holder {
    fn expected(self, rule: Rule, method: &Method) -> u16 {
        match (self, rule) {
            // Reads as its app's portal token does; every write is refused.
            (Self::ReadOnlyPortal, _) if method != Method::GET => 403,
            (Self::ReadOnlyPortal, rule) => Self::Portal.expected(rule, method),
            (Self::Nobody | Self::Expired | Self::Revoked, _) => 401,
            (Self::Admin, _) => 200,
            (Self::SameApp | Self::Portal, Rule::Admin) => 403,
            (Self::SameApp | Self::Portal, _) => 200,
            (Self::OtherApp, Rule::Tenant) => 404,
            (Self::OtherApp, Rule::Admin) => 403,
            (Self::OtherApp, Rule::Catalog) => 200,
        }
    }
}

/// One app's things, made by the admin.
struct Tenant {
    app: String,
    uid: String,
    endpoint: String,
    message: String,
    attempt: String,
    task: String,
    secret: String,
}

async fn tenant(app: &TestApp, receiver: &Receiver, uid: &str) -> Tenant {
    let (status, created) = app.post("/app/", json!({"name": uid, "uid": uid})).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let endpoint = app
        .create_endpoint(&id, &receiver.url(&format!("/{uid}")), None)
        .await;
    let message = app.send(&id, "call.completed", json!({"for": uid})).await;
    let attempt = eventually(Duration::from_secs(10), "the attempt", || async {
        app.attempts_of(&id, &message)
            .await
            .first()
            .map(|a| a["id"].as_str().unwrap().to_owned())
    })
    .await;
    let (status, task) = app
        .post(
            &format!("/app/{id}/endpoint/{endpoint}/recover/"),
            json!({"since": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let secret = app.secret(&id, &endpoint).await;
    Tenant {
        app: id,
        uid: uid.to_owned(),
        endpoint,
        message,
        attempt,
        task: task["id"].as_str().unwrap().to_owned(),
        secret,
    }
}

async fn token(app: &TestApp, tenant: &str, body: Value) -> (String, String) {
    let (status, made) = app.post(&format!("/app/{tenant}/token/"), body).await;
    assert_eq!(status, 201, "{made}");
    (
        made["token"].as_str().unwrap().to_owned(),
        made["id"].as_str().unwrap().to_owned(),
    )
}

/// The routes, as (rule, method, path template, body). Templates name the
/// target app's things; `{fresh_ep}` and `{fresh_token}` are made anew for
/// each request that should succeed, so destructive routes can be tried.
fn routes() -> Vec<(Rule, Method, &'static str, Option<Value>)> {
    use Rule::*;
    let since = json!({"since": "2020-01-01T00:00:00Z"});
    vec![
        (Admin, Method::GET, "/app/", None),
        (Admin, Method::POST, "/app/", Some(json!({"name": "new"}))),
        (Tenant, Method::GET, "/app/{app}/", None),
        (Tenant, Method::GET, "/app/{uid}/", None),
        (
            Tenant,
            Method::PATCH,
            "/app/{app}/",
            Some(json!({"name": "renamed"})),
        ),
        (Catalog, Method::GET, "/event-type/", None),
        (Catalog, Method::GET, "/event-type/call.completed/", None),
        (
            Admin,
            Method::POST,
            "/event-type/",
            Some(json!({"name": "custom.{n}", "description": "x"})),
        ),
        (
            Admin,
            Method::PATCH,
            "/event-type/call.completed/",
            Some(json!({"description": "Calls that completed"})),
        ),
        (Tenant, Method::GET, "/app/{app}/endpoint/", None),
        (
            Tenant,
            Method::POST,
            "/app/{app}/endpoint/",
            Some(json!({"url": "{receiver}/new"})),
        ),
        (Tenant, Method::GET, "/app/{app}/endpoint/{ep}/", None),
        (Tenant, Method::GET, "/app/{uid}/endpoint/{ep}/", None),
        (
            Tenant,
            Method::PATCH,
            "/app/{app}/endpoint/{ep}/",
            Some(json!({"description": "d"})),
        ),
        (
            Tenant,
            Method::DELETE,
            "/app/{app}/endpoint/{fresh_ep}/",
            None,
        ),
        (
            Tenant,
            Method::GET,
            "/app/{app}/endpoint/{ep}/secret/",
            None,
        ),
        (
            Tenant,
            Method::POST,
            "/app/{app}/endpoint/{fresh_ep}/secret/rotate/",
            Some(json!({})),
        ),
        (
            Tenant,
            Method::GET,
            "/app/{app}/endpoint/{ep}/headers/",
            None,
        ),
        (
            Tenant,
            Method::PATCH,
            "/app/{app}/endpoint/{ep}/headers/",
            Some(json!({"headers": {"x-a": "b"}})),
        ),
        (Tenant, Method::GET, "/app/{app}/endpoint/{ep}/stats/", None),
        (
            Tenant,
            Method::GET,
            "/app/{app}/endpoint/{ep}/health/",
            None,
        ),
        (
            Tenant,
            Method::POST,
            "/app/{app}/endpoint/{ep}/recover/",
            Some(since),
        ),
        (
            Tenant,
            Method::POST,
            "/app/{app}/endpoint/{ep}/send-example/",
            Some(json!({"eventType": "call.completed"})),
        ),
        (Tenant, Method::GET, "/app/{app}/msg/", None),
        (
            Tenant,
            Method::POST,
            "/app/{app}/msg/",
            Some(json!({"eventType": "call.started", "payload": {}})),
        ),
        (Tenant, Method::GET, "/app/{app}/msg/{msg}/", None),
        (
            Tenant,
            Method::GET,
            "/app/{app}/attempt/endpoint/{ep}/",
            None,
        ),
        (Tenant, Method::GET, "/app/{app}/attempt/msg/{msg}/", None),
        (
            Tenant,
            Method::GET,
            "/app/{app}/msg/{msg}/attempt/{atmpt}/",
            None,
        ),
        (
            Tenant,
            Method::POST,
            "/app/{app}/msg/{msg}/endpoint/{ep}/resend/",
            None,
        ),
        (Tenant, Method::GET, "/background-task/{task}/", None),
        (Tenant, Method::GET, "/app/{app}/alert-rules/", None),
        (
            Tenant,
            Method::PUT,
            "/app/{app}/alert-rules/",
            Some(json!({"failingAfter": 3})),
        ),
        (Tenant, Method::DELETE, "/app/{app}/alert-rules/", None),
        (Tenant, Method::GET, "/app/{app}/audit/", None),
        (Admin, Method::GET, "/audit/", None),
        (Catalog, Method::GET, "/egress/", None),
        (
            Tenant,
            Method::POST,
            "/app/{app}/url-check/",
            Some(json!({"url": "{receiver}/check"})),
        ),
        (Admin, Method::GET, "/app/{app}/token/", None),
        (
            Admin,
            Method::POST,
            "/app/{app}/token/",
            Some(json!({"name": "more"})),
        ),
        (
            Admin,
            Method::DELETE,
            "/app/{app}/token/{fresh_token}/",
            None,
        ),
        (
            Admin,
            Method::POST,
            "/auth/app-portal-access/{app}/",
            Some(json!({})),
        ),
        (Tenant, Method::POST, "/app/{app}/inspector/", None),
        (Tenant, Method::GET, "/app/{app}/inspector/", None),
        (Tenant, Method::GET, "/app/{app}/inspector/request/", None),
        (
            Tenant,
            Method::DELETE,
            "/app/{app}/inspector/{open_inspector}",
            None,
        ),
    ]
}

#[tokio::test]
async fn every_route_answers_each_kind_of_token_as_its_scope_says() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let a = tenant(&app, &receiver, "tenant-a").await;
    let b = tenant(&app, &receiver, "tenant-b").await;

    let (same, _) = token(&app, &a.app, json!({"name": "same"})).await;
    let (other, _) = token(&app, &b.app, json!({"name": "other"})).await;
    let (revoked, revoked_id) = token(&app, &a.app, json!({"name": "revoked"})).await;
    let (status, _) = app
        .request(
            Method::DELETE,
            &format!("/app/{}/token/{revoked_id}/", a.app),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (expired, _) = token(&app, &a.app, json!({"name": "brief", "expiresIn": 1})).await;
    let (status, portal) = app
        .post(&format!("/auth/app-portal-access/{}/", a.uid), json!({}))
        .await;
    assert_eq!(status, 200, "{portal}");
    let portal = portal["token"].as_str().unwrap().to_owned();
    assert!(!portal.is_empty());
    let (status, read_only) = app
        .post(
            &format!("/auth/app-portal-access/{}/", a.uid),
            json!({"readOnly": true}),
        )
        .await;
    assert_eq!(status, 200, "{read_only}");
    let read_only = read_only["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await; // `expired` runs out

    let holders = [
        (Holder::Nobody, None),
        (Holder::Expired, Some(expired.as_str())),
        (Holder::Revoked, Some(revoked.as_str())),
        (Holder::OtherApp, Some(other.as_str())),
        (Holder::SameApp, Some(same.as_str())),
        (Holder::Portal, Some(portal.as_str())),
        (Holder::ReadOnlyPortal, Some(read_only.as_str())),
        (Holder::Admin, Some(TOKEN)),
    ];
    // The audit action each route declares, from the served document.
    let (_, document) = app.get("/openapi.json").await;
    let declared = |method: &Method, template: &str| -> Option<String> {
        let mut path = format!("/api/v1{}", template.trim_end_matches('/'));
        for (from, to) in [
            ("{uid}", "{app}"),
            ("{fresh_ep}", "{endpoint}"),
            ("{ep}", "{endpoint}"),
            ("{atmpt}", "{attempt}"),
            ("{fresh_token}", "{token}"),
            ("/{open_inspector}", ""),
        ] {
            path = path.replace(from, to);
        }
        document["paths"][&path][method.as_str().to_ascii_lowercase()]["x-herald"]["audit"]
            .as_str()
            .filter(|a| *a != "none")
            .map(str::to_owned)
    };
    for (n, (rule, method, template, body)) in routes().into_iter().enumerate() {
        for (holder, token) in holders {
            let expected = holder.expected(rule, &method);
            let mut path = template
                .replace("{app}", &a.app)
                .replace("{uid}", &a.uid)
                .replace("{ep}", &a.endpoint)
                .replace("{msg}", &a.message)
                .replace("{atmpt}", &a.attempt)
                .replace("{task}", &a.task);
            if path.contains("{fresh_ep}") {
                let fresh = app
                    .create_endpoint(&a.app, &receiver.url("/fresh"), None)
                    .await;
                path = path.replace("{fresh_ep}", &fresh);
            }
            if path.contains("{open_inspector}") {
                let (status, _) = app
                    .post(&format!("/app/{}/inspector/", a.app), json!({}))
                    .await;
                assert!(status == 200 || status == 201, "{status}");
                path = path.replace("{open_inspector}", "");
            }
            if path.contains("{fresh_token}") {
                let (_, fresh) = self::token(&app, &a.app, json!({"name": "fresh"})).await;
                path = path.replace("{fresh_token}", &fresh);
            }
            let body = body.as_ref().map(|b| {
                let text = b
                    .to_string()
                    .replace("{receiver}", &receiver.url(""))
                    .replace("{n}", &format!("t{n}{holder:?}").to_lowercase());
                serde_json::from_str::<Value>(&text).unwrap()
            });
            let (status, text) = app.request_as(token, method.clone(), &path, body).await;
            let what = format!("{holder:?} {method} {path} -> {status} {text}");
            if expected == 200 {
                assert!((200..300).contains(&status), "{what}");
            } else {
                assert_eq!(status, expected, "{what}");
            }
            // A change records the action its route declares.
            if holder == Holder::Admin && method != Method::GET {
                if let Some(action) = declared(&method, template) {
                    let (_, audit) = app.get("/audit/?limit=1").await;
                    assert_eq!(audit["data"][0]["action"], action.as_str(), "{what}");
                }
            }
            // Nothing of an app the holder may not see is in the answer.
            let foreign: &[&Tenant] = match holder {
                Holder::Admin => &[],
                Holder::SameApp | Holder::Portal | Holder::ReadOnlyPortal => &[&b],
                _ => &[&a, &b],
            };
            for tenant in foreign {
                for secret in [
                    &tenant.app,
                    &tenant.endpoint,
                    &tenant.message,
                    &tenant.secret,
                ] {
                    assert!(!text.contains(secret.as_str()), "{what} leaks {secret}");
                }
            }
        }
    }

    // Another app's things under one's own app are not found either.
    for path in [
        format!("/app/{}/endpoint/{}/", b.app, a.endpoint),
        format!("/app/{}/endpoint/{}/secret/", b.app, a.endpoint),
        format!("/app/{}/msg/{}/", b.app, a.message),
        format!("/app/{}/attempt/msg/{}/", b.app, a.message),
        format!("/app/{}/msg/{}/attempt/{}/", b.app, a.message, a.attempt),
        format!("/background-task/{}/", a.task),
    ] {
        let (status, text) = app.request_as(Some(&other), Method::GET, &path, None).await;
        assert_eq!(status, 404, "{path}: {text}");
    }
    // An app token cannot delete another app; the admin can.
    let (status, _) = app
        .request_as(
            Some(&other),
            Method::DELETE,
            &format!("/app/{}/", a.app),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.get(&format!("/app/{}/", a.app)).await;
    assert_eq!(status, 200, "still there");
}

#[tokio::test]
async fn tokens_are_shown_once_listed_without_secrets_and_changes_are_audited() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let (status, made) = app
        .post(
            &format!("/app/{tenant}/token/"),
            json!({"name": "ci", "expiresIn": 3600}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let secret = made["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("htk_") && secret.len() > 40, "{made}");
    assert!(made["expiresAt"].is_string());

    let (_, list) = app.get(&format!("/app/{tenant}/token/")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&secret), "{list}");
    assert!(list["data"][0].get("token").is_none());

    // The token works, and what it changes is recorded under its id.
    let (status, text) = app
        .request_as(
            Some(&secret),
            Method::POST,
            &format!("/app/{tenant}/endpoint/"),
            Some(json!({"url": receiver.url("/hook")})),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let endpoint: Value = serde_json::from_str(&text).unwrap();
    let endpoint = endpoint["id"].as_str().unwrap();
    let (status, _) = app
        .post(
            &format!("/app/{tenant}/endpoint/{endpoint}/secret/rotate/"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, audit) = app.get(&format!("/app/{tenant}/audit/")).await;
    let entries: Vec<(String, String, String)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let token_id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(
        entries,
        [
            (
                "endpoint.secret_rotated".to_owned(),
                "admin".to_owned(),
                endpoint.to_owned()
            ),
            (
                "endpoint.created".to_owned(),
                token_id.clone(),
                endpoint.to_owned()
            ),
            (
                "token.created".to_owned(),
                "admin".to_owned(),
                token_id.clone()
            ),
            ("app.created".to_owned(), "admin".to_owned(), tenant.clone()),
        ],
        "newest first"
    );
    let (_, all) = app.get(&format!("/audit/?app_id={tenant}")).await;
    assert_eq!(all["data"], audit["data"]);
    assert!(!audit.to_string().contains(&secret));

    // Revoked: refused at once.
    let (status, _) = app
        .request(
            Method::DELETE,
            &format!("/app/{tenant}/token/{token_id}/"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .request_as(Some(&secret), Method::GET, &format!("/app/{tenant}/"), None)
        .await;
    assert_eq!(status, 401);
    let (_, list) = app.get(&format!("/app/{tenant}/token/")).await;
    assert!(list["data"][0]["revokedAt"].is_string(), "{list}");

    // Bad requests name the field.
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x", "expiresIn": 0}), "expiresIn"),
    ] {
        let (status, error) = app.post(&format!("/app/{tenant}/token/"), body).await;
        assert_eq!(status, 422, "{error}");
        assert!(
            crate::helpers::detail_text(&error).contains(field),
            "{error}"
        );
    }
    let (status, portal) = app
        .post(
            &format!("/auth/app-portal-access/{tenant}/"),
            json!({"expiry": 999999}),
        )
        .await;
    assert_eq!(status, 422, "{portal}");
}

/// Runs `herald token …` on a data directory; returns stdout.
fn token_command(data_dir: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("token")
        .args(args)
        .env("HERALD_DATA_DIR", data_dir)
        .output()
        .expect("herald token runs");
    assert!(
        output.status.success(),
        "herald token {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn herald_token_create_makes_a_working_token_that_revoke_stops() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = crate::helpers::Server::start(&crate::helpers::sqlite_env(data_dir.path()));
    let client = reqwest::Client::new();
    let app = server
        .post(&client, "/app/", json!({"name": "Acme", "uid": "acme"}))
        .await;
    let app = app["id"].as_str().unwrap().to_owned();

    let token = token_command(
        data_dir.path(),
        &["create", "--app", "acme", "--name", "deploy"],
    );
    let token = token.trim();
    assert!(token.starts_with("htk_"), "{token}");
    let url = format!("http://{}/api/v1/app/{app}/", server.address);
    let status = |token: String| {
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(token.to_owned()).await, 200);

    let listed = token_command(data_dir.path(), &["list", "--app", "acme"]);
    let id = listed.split('\t').next().unwrap().to_owned();
    assert!(
        id.starts_with("tok_") && listed.contains("valid\tdeploy"),
        "{listed}"
    );
    assert!(!listed.contains(token), "{listed}");
    token_command(data_dir.path(), &["revoke", "--app", "acme", &id]);
    assert_eq!(status(token.to_owned()).await, 401);

    // The CLI is a door too: its changes are in the app's audit log.
    let audit = server.get(&client, &format!("/app/{app}/audit/")).await;
    let cli: Vec<(&str, &str)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "cli")
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        cli,
        [
            ("token.revoked", id.as_str()),
            ("token.created", id.as_str())
        ],
        "{audit}"
    );
}

#[tokio::test]
async fn no_secret_or_token_ever_reaches_the_logs() {
    use base64::Engine;
    let data_dir = tempfile::tempdir().unwrap();
    let mut env = crate::helpers::sqlite_env(data_dir.path());
    // Everything Herald and its libraries say, at the most verbose level.
    env.push(("HERALD_LOG", "trace".to_owned()));
    env.push(("HERALD_RETRY_SCHEDULE", "200ms".to_owned()));
    let server = crate::helpers::Server::start(&env);
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let base = format!("http://{}/api/v1", server.address);
    let call = |method: Method, path: &str, token: &str, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let first_key = [7u8; 32];
    let second_key = [9u8; 24];
    let standard = base64::engine::general_purpose::STANDARD;
    let first = format!("whsec_{}", standard.encode(first_key));
    let second = format!("whsec_{}", standard.encode(second_key));
    let credential = "Bearer crm-credential-5f1e9a";

    // Create, rotate, deliver, fail: the whole life of a secret.
    let (_, app) = call(Method::POST, "/app/", TOKEN, Some(json!({"name": "Acme"}))).await;
    let app = app["id"].as_str().unwrap().to_owned();
    let (_, made) = call(
        Method::POST,
        &format!("/app/{app}/token/"),
        TOKEN,
        Some(json!({"name": "ci"})),
    )
    .await;
    let api_token = made["token"].as_str().unwrap().to_owned();
    let (status, endpoint) = call(
        Method::POST,
        &format!("/app/{app}/endpoint/"),
        &api_token,
        Some(json!({"url": receiver.url("/hook"), "secret": first,
                    "headers": {"Authorization": credential}})),
    )
    .await;
    assert_eq!(status, 201, "{endpoint}");
    let endpoint = endpoint["id"].as_str().unwrap().to_owned();
    call(
        Method::GET,
        &format!("/app/{app}/endpoint/{endpoint}/secret/"),
        &api_token,
        None,
    )
    .await;
    let (status, _) = call(
        Method::POST,
        &format!("/app/{app}/endpoint/{endpoint}/secret/rotate/"),
        TOKEN,
        Some(json!({"key": second})),
    )
    .await;
    assert_eq!(status, 200);
    call(
        Method::POST,
        &format!("/app/{app}/msg/"),
        &api_token,
        Some(json!({"eventType": "call.completed", "payload": {"n": 1}})),
    )
    .await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    receiver.always("/hook", crate::helpers::Reply::Status(500));
    call(
        Method::POST,
        &format!("/app/{app}/msg/"),
        &api_token,
        Some(json!({"eventType": "call.completed", "payload": {"n": 2}})),
    )
    .await;
    receiver.wait_for(3, Duration::from_secs(10)).await;
    // A wrong token and a bad secret are refused without echoing them.
    call(
        Method::GET,
        "/app/",
        "htk_not-a-real-token-but-secret-ish",
        None,
    )
    .await;
    call(
        Method::POST,
        &format!("/app/{app}/endpoint/{endpoint}/secret/rotate/"),
        TOKEN,
        Some(json!({"key": "whsec_tooshort"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the last log lines

    let log = server.log_lines().join("\n");
    for line in [
        "Herald is listening",
        "connection is ready",
        "\"next\":\"retry\"",
    ] {
        assert!(log.contains(line), "the flow was logged: {log}");
    }
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forbidden = [
        first.clone(),
        second.clone(),
        standard.encode(first_key),
        standard.encode(second_key),
        url_safe.encode(first_key),
        url_safe.encode(second_key),
        TOKEN.to_owned(),
        api_token.clone(),
        api_token.trim_start_matches("htk_").to_owned(),
        "crm-credential-5f1e9a".to_owned(),
        "htk_not-a-real-token-but-secret-ish".to_owned(),
        "whsec_tooshort".to_owned(),
    ];
    for secret in &forbidden {
        assert!(!log.contains(secret.as_str()), "the log contains {secret}");
    }
}

/// `herald serve` on `data_dir` with `env`, expected to refuse to start:
/// what it said.
fn refused_start(data_dir: &std::path::Path, env: &[(&str, String)]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .env("HERALD_DATA_DIR", data_dir)
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .env("HERALD_ADMIN_TOKEN", TOKEN)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .expect("herald runs");
    assert!(!output.status.success(), "it must not start");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn with_a_master_key_no_secret_is_in_the_database_file_and_the_key_is_required() {
    use base64::Engine;
    let standard = base64::engine::general_purpose::STANDARD;
    let data_dir = tempfile::tempdir().unwrap();
    let first_key = standard.encode([1u8; 32]);
    let second_key = standard.encode([2u8; 32]);
    let mut env = crate::helpers::sqlite_env(data_dir.path());
    env.push(("HERALD_MASTER_KEY", first_key.clone()));
    let raw_key = [42u8; 32];
    let secret = format!("whsec_{}", standard.encode(raw_key));
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();

    let server = crate::helpers::Server::start(&env);
    let app = server.post(&client, "/app/", json!({"name": "Acme"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    let endpoint = server
        .post(
            &client,
            &format!("/app/{app}/endpoint/"),
            json!({"url": receiver.url("/hook"), "secret": secret}),
        )
        .await;
    let endpoint = endpoint["id"].as_str().unwrap().to_owned();
    server
        .post(
            &client,
            &format!("/app/{app}/msg/"),
            json!({"eventType": "call.completed", "payload": {"n": 1}}),
        )
        .await;
    let delivered = receiver.wait_for(1, Duration::from_secs(10)).await;
    let key = herald_domain::Secret::parse(&secret).unwrap();
    assert!(
        crate::helpers::verifies(&delivered[0], &key),
        "signed with the real secret"
    );
    let shown = server
        .get(&client, &format!("/app/{app}/endpoint/{endpoint}/secret/"))
        .await;
    assert_eq!(shown["key"], secret.as_str());
    server.terminate();

    // The database files hold no form of the secret.
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("herald.db") {
            raw.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(raw.len() > 4096, "the database was read");
    let raw = String::from_utf8_lossy(&raw);
    for form in [
        secret.clone(),
        standard.encode(raw_key),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw_key),
    ] {
        assert!(!raw.contains(&form), "the database file contains {form}");
    }
    assert!(raw.contains("hsec1:"), "sealed secrets are there");

    // Without the key, or with a wrong one, Herald refuses to start and says why.
    let without = refused_start(data_dir.path(), &[]);
    assert!(without.contains("set HERALD_MASTER_KEY"), "{without}");
    let wrong = refused_start(
        data_dir.path(),
        &[("HERALD_MASTER_KEY", second_key.clone())],
    );
    assert!(wrong.contains("does not open"), "{wrong}");

    // Rotation: the new key with the old one as previous reseals at start;
    // after that the new key alone is enough.
    let mut rotating = crate::helpers::sqlite_env(data_dir.path());
    rotating.push(("HERALD_MASTER_KEY", second_key.clone()));
    rotating.push(("HERALD_PREVIOUS_MASTER_KEY", first_key.clone()));
    crate::helpers::Server::start(&rotating).terminate();
    let mut rotated = crate::helpers::sqlite_env(data_dir.path());
    rotated.push(("HERALD_MASTER_KEY", second_key));
    let server = crate::helpers::Server::start(&rotated);
    let shown = server
        .get(&client, &format!("/app/{app}/endpoint/{endpoint}/secret/"))
        .await;
    assert_eq!(
        shown["key"],
        secret.as_str(),
        "the same secret after rotation"
    );
    server.terminate();
    let old = refused_start(data_dir.path(), &[("HERALD_MASTER_KEY", first_key)]);
    assert!(old.contains("does not open"), "{old}");
}

#[tokio::test]
async fn an_app_token_past_its_rate_gets_429_with_retry_after_and_apps_have_an_endpoint_limit() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        token_rate_limit: Some(5),
        max_endpoints_per_app: 2,
        ..crate::helpers::Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let (token, _) = token(&app, &tenant, json!({"name": "busy"})).await;
    let path = format!("/app/{tenant}/");

    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = reqwest::Client::new()
            .get(app.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        statuses.push((response.status().as_u16(), retry_after));
    }
    assert_eq!(
        statuses[..5],
        vec![(200, None); 5],
        "the burst: {statuses:?}"
    );
    assert_eq!(statuses[5], (429, Some("1".to_owned())), "{statuses:?}");
    // The admin token is the platform's own: never limited.
    for _ in 0..20 {
        assert_eq!(app.get(&path).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = app.request_as(Some(&token), Method::GET, &path, None).await;
    assert_eq!(status, 200, "refilled after a second");

    for n in 0..2 {
        app.create_endpoint(&tenant, &receiver.url(&format!("/{n}")), None)
            .await;
    }
    let (status, error) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": receiver.url("/third")}),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert!(
        crate::helpers::detail_text(&error).contains("endpoints"),
        "{error}"
    );
}

#[tokio::test]
async fn an_ed25519_endpoint_gets_v1a_signatures_that_its_public_key_verifies() {
    use base64::Engine;
    let standard = base64::engine::general_purpose::STANDARD;
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let (status, endpoint) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": receiver.url("/hook"), "signing": "ed25519"}),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let endpoint = endpoint["id"].as_str().unwrap().to_owned();
    let secret_path = format!("/app/{tenant}/endpoint/{endpoint}/secret/");
    let (_, secret) = app.get(&secret_path).await;
    assert!(
        secret["key"].as_str().unwrap().starts_with("whsk_"),
        "{secret}"
    );
    let public = |secret: &Value| {
        let text = secret["publicKey"].as_str().unwrap();
        let bytes: [u8; 32] = standard
            .decode(text.strip_prefix("whpk_").unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).unwrap()
    };
    let first = public(&secret);

    // Verified by a receiver that holds only the public key.
    let verified_by = |request: &crate::helpers::Recorded, key: &ed25519_dalek::VerifyingKey| {
        let content = [
            request.header("webhook-id").as_bytes(),
            b".",
            request.header("webhook-timestamp").as_bytes(),
            b".",
            &request.body,
        ]
        .concat();
        request
            .header("webhook-signature")
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1a,"))
            .filter_map(|encoded| standard.decode(encoded).ok())
            .filter_map(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
            .any(|signature| key.verify_strict(&content, &signature).is_ok())
    };
    app.send(&tenant, "call.completed", json!({"n": 1})).await;
    let first_delivery = receiver.wait_for(1, Duration::from_secs(10)).await[0].clone();
    assert!(first_delivery
        .header("webhook-signature")
        .starts_with("v1a,"));
    assert!(verified_by(&first_delivery, &first));

    // Rotation keeps the kind; both keys sign during the grace period.
    let (status, _) = app.post(&format!("{secret_path}rotate/"), json!({})).await;
    assert_eq!(status, 200);
    let (_, rotated) = app.get(&secret_path).await;
    assert!(rotated["key"].as_str().unwrap().starts_with("whsk_"));
    let second = public(&rotated);
    assert_ne!(first, second);
    app.send(&tenant, "call.completed", json!({"n": 2})).await;
    let deliveries = receiver.wait_for(2, Duration::from_secs(10)).await;
    let latest = &deliveries[1];
    assert_eq!(latest.header("webhook-signature").split(' ').count(), 2);
    assert!(verified_by(latest, &first) && verified_by(latest, &second));

    let (status, error) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": receiver.url("/x"), "signing": "rsa"}),
        )
        .await;
    assert_eq!(status, 422, "{error}");
}

#[tokio::test]
async fn a_token_logs_itself_out_and_expire_all_ends_an_app_s_portal_sessions() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let portal = |read_only: bool| {
        let app = &app;
        let tenant = &tenant;
        async move {
            let (status, access) = app
                .post(
                    &format!("/auth/app-portal-access/{tenant}/"),
                    json!({"readOnly": read_only}),
                )
                .await;
            assert_eq!(status, 200, "{access}");
            access["token"].as_str().unwrap().to_owned()
        }
    };
    let works = |token: String| {
        let app = &app;
        let tenant = &tenant;
        async move {
            app.request_as(Some(&token), Method::GET, &format!("/app/{tenant}/"), None)
                .await
                .0
        }
    };
    let logout = |token: Option<String>| {
        let app = &app;
        async move {
            app.request_as(
                token.as_deref(),
                Method::POST,
                "/auth/logout/",
                Some(json!({})),
            )
            .await
            .0
        }
    };

    let session = portal(false).await;
    let viewer = portal(true).await;
    assert_eq!(works(session.clone()).await, 200);
    assert_eq!(logout(Some(session.clone())).await, 204);
    assert_eq!(works(session).await, 401, "logged out");
    assert_eq!(
        logout(Some(viewer.clone())).await,
        204,
        "a read-only session logs out too"
    );
    assert_eq!(works(viewer).await, 401);
    assert_eq!(logout(None).await, 401, "no token");
    assert_eq!(
        logout(Some(TOKEN.to_owned())).await,
        400,
        "the admin token is configuration"
    );

    let (first, second) = (portal(false).await, portal(true).await);
    let (_, api) = app
        .post(&format!("/app/{tenant}/token/"), json!({"name": "ci"}))
        .await;
    let api = api["token"].as_str().unwrap().to_owned();
    let expire = format!("/auth/app/{tenant}/expire-all/");
    let (later, error) = app.post(&expire, json!({"expiry": 60})).await;
    assert_eq!(later, 422, "{error}");
    let (ended, _) = app.post(&expire, json!({})).await;
    assert_eq!(ended, 204);
    assert_eq!(works(first).await, 401, "portal sessions end");
    assert_eq!(works(second).await, 401);
    assert_eq!(works(api.clone()).await, 200, "API tokens stay");
    let (status, _) = app
        .request_as(Some(&api), Method::POST, &expire, Some(json!({})))
        .await;
    assert_eq!(status, 403, "an app token cannot end sessions");
}
