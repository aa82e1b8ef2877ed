//! The portal over HTTP: logging in with a portal link's token, the session
//! cookie's flags, tenant isolation of pages, and CSRF on forms. (The
//! browser walk-through is in `browser.rs`.)

use serde_json::json;

use crate::helpers::{spawn_app, Receiver, TestApp};

const WAIT: std::time::Duration = std::time::Duration::from_secs(15);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn base(app: &TestApp) -> String {
    app.url("").trim_end_matches("/api/v1").to_owned()
}

async fn portal_token(app: &TestApp, tenant: &str) -> String {
    let (status, access) = app
        .post(&format!("/auth/app-portal-access/{tenant}/"), json!({}))
        .await;
    assert_eq!(status, 200, "{access}");
    let url = access["url"].as_str().unwrap();
    let token = access["token"].as_str().unwrap().to_owned();
    assert!(url.ends_with(&format!("/portal/#token={token}")), "{url}");
    token
}

/// Logs in with `token`; returns the session cookie (`name=value`).
async fn log_in(app: &TestApp, token: &str) -> String {
    let response = client()
        .post(format!("{}/portal/login", base(app)))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/portal"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain http here: {cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

async fn get(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = client().get(format!("{}{path}", base(app)));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn a_portal_link_opens_its_own_app_only_and_forms_need_their_csrf_token() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (a, b) = (
        app.create_app("Tenant A").await,
        app.create_app("Tenant B").await,
    );
    app.create_endpoint(&a, &receiver.url("/a-hook"), Some(&["call.*"]))
        .await;
    app.create_endpoint(&b, &receiver.url("/b-secret-hook"), None)
        .await;

    // Not logged in: the login page.
    let (status, headers, _) = get(&app, "/portal", None).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/portal/login");
    let (status, _, login) = get(&app, "/portal/login", None).await;
    assert_eq!(status, 200);
    assert!(login.contains("name=\"token\""), "{login}");
    let bad = client()
        .post(format!("{}/portal/login", base(&app)))
        .form(&[("token", "htk_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    assert!(bad.headers().get("set-cookie").is_none());

    // A's portal link: A's endpoints, not B's.
    let cookie = log_in(&app, &portal_token(&app, &a).await).await;
    let (status, headers, _) = get(&app, "/portal", Some(&cookie)).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], format!("/portal/app/{a}").as_str());
    let (status, headers, page) = get(&app, &format!("/portal/app/{a}"), Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(page.contains(&receiver.url("/a-hook")), "{page}");
    assert!(page.contains("call.*"), "{page}");
    assert!(!page.contains("b-secret-hook"), "{page}");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'self'"), "{policy}");
    assert!(
        policy.contains("script-src 'self';"),
        "no inline script: {policy}"
    );
    assert!(
        !page.contains("<script>"),
        "scripts come from the binary's file"
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert!(page.len() < 100 * 1024, "a page stays small");
    let (status, _, other) = get(&app, &format!("/portal/app/{b}"), Some(&cookie)).await;
    assert_eq!(status, 404);
    assert!(
        !other.contains("b-secret-hook") && !other.contains("Tenant B"),
        "{other}"
    );

    // Forms without the session's CSRF token are refused.
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    for form in [vec![("csrf", "forged")], vec![]] {
        let refused = client()
            .post(format!("{}/portal/logout", base(&app)))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(
            refused.status().is_client_error(),
            "{form:?}: {}",
            refused.status()
        );
        assert!(refused.headers().get("set-cookie").is_none(), "{form:?}");
    }
    // Every other form too: nothing changes without the token.
    let endpoint_id = {
        let (_, list) = app.get(&format!("/app/{a}/endpoint/")).await;
        list["data"][0]["id"].as_str().unwrap().to_owned()
    };
    let ep = format!("/portal/app/{a}/endpoint/{endpoint_id}");
    for path in [
        format!("/portal/app/{a}/endpoints/new"),
        format!("/portal/app/{a}/url-check"),
        format!("/portal/app/{a}/alerts"),
        format!("{ep}/edit"),
        format!("{ep}/test"),
        format!("{ep}/secret"),
        format!("{ep}/rotate"),
        format!("{ep}/toggle"),
        format!("{ep}/recover"),
        format!("{ep}/delete"),
        format!("{ep}/activity/retry"),
        format!("/portal/app/{a}/inspector"),
        format!("/portal/app/{a}/inspector/delete"),
    ] {
        let refused = client()
            .post(format!("{}{path}", base(&app)))
            .header("cookie", &cookie)
            .form(&[("csrf", "forged"), ("url", "https://example.com/x")])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 403, "{path}");
        assert!(!refused.text().await.unwrap().contains("whsec_"), "{path}");
    }
    let (_, still) = app.get(&format!("/app/{a}/endpoint/{endpoint_id}/")).await;
    assert_eq!(still["disabled"], false, "not toggled");
    let (_, list) = app.get(&format!("/app/{a}/endpoint/")).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "none added or deleted"
    );

    let out = client()
        .post(format!("{}/portal/logout", base(&app)))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 303);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));

    // The admin sees every app.
    let admin = log_in(&app, crate::helpers::TOKEN).await;
    let (status, _, apps) = get(&app, "/portal", Some(&admin)).await;
    assert_eq!(status, 200);
    assert!(
        apps.contains("Tenant A") && apps.contains("Tenant B"),
        "{apps}"
    );
}

#[tokio::test]
async fn a_read_only_portal_link_shows_everything_and_changes_nothing() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Tenant A").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let message = app
        .send(&tenant, "call.completed", json!({"callId": "c1"}))
        .await;
    crate::helpers::attempted(&app, &tenant, &message, 1).await;
    let (status, access) = app
        .post(
            &format!("/auth/app-portal-access/{tenant}/"),
            json!({"readOnly": true}),
        )
        .await;
    assert_eq!(status, 200, "{access}");
    let token = access["token"].as_str().unwrap().to_owned();
    let cookie = log_in(&app, &token).await;
    let ep = format!("/portal/app/{tenant}/endpoint/{endpoint}");

    // Every page reads, and offers no change: its only forms are logging
    // out, filtering and revealing the secret.
    let mut csrf = String::new();
    for path in [
        format!("/portal/app/{tenant}"),
        ep.clone(),
        format!("{ep}/activity"),
        format!("/portal/app/{tenant}/activity"),
        format!("/portal/app/{tenant}/alerts"),
        format!("/portal/app/{tenant}/inspector"),
        format!("/portal/app/{tenant}/catalog"),
    ] {
        let (status, _, page) = get(&app, &path, Some(&cookie)).await;
        assert_eq!(status, 200, "{path}");
        for action in page.split("method=\"post\" action=\"").skip(1) {
            let action = action.split('"').next().unwrap();
            assert!(
                action == "/portal/logout" || action.ends_with("/secret"),
                "{path} offers {action}"
            );
        }
        for control in [
            "Add endpoint",
            "Rotate secret",
            "Send test event",
            "Retry",
            "Save alert rules",
            "Edit",
        ] {
            assert!(
                !page.contains(&format!(">{control}<")),
                "{path} shows {control}"
            );
        }
        if csrf.is_empty() {
            csrf = page
                .split("name=\"csrf\" value=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap()
                .to_owned();
        }
    }
    let (_, _, page) = get(&app, &ep, Some(&cookie)).await;
    assert!(page.contains(&receiver.url("/hook")), "{page}");

    // The forms' addresses refuse it, even with a valid CSRF token.
    for path in [
        format!("/portal/app/{tenant}/endpoints/new"),
        format!("/portal/app/{tenant}/url-check"),
        format!("/portal/app/{tenant}/alerts"),
        format!("{ep}/edit"),
        format!("{ep}/test"),
        format!("{ep}/rotate"),
        format!("{ep}/toggle"),
        format!("{ep}/recover"),
        format!("{ep}/delete"),
        format!("{ep}/activity/retry"),
        format!("/portal/app/{tenant}/inspector"),
        format!("/portal/app/{tenant}/inspector/delete"),
    ] {
        let refused = client()
            .post(format!("{}{path}", base(&app)))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("url", "https://hooks.test/x"),
                ("message", message.as_str()),
                ("event_type", "call.completed"),
                ("since", "2020-01-01T00:00"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 403, "{path}");
    }
    for path in [
        format!("/portal/app/{tenant}/endpoints/new"),
        format!("{ep}/edit"),
    ] {
        let (status, _, _) = get(&app, &path, Some(&cookie)).await;
        assert_eq!(status, 403, "{path}");
    }
    // Revealing the secret reads.
    let revealed = client()
        .post(format!("{}{ep}/secret", base(&app)))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revealed.status().as_u16(), 200);
    assert!(revealed.text().await.unwrap().contains("whsec_"));

    let (_, still) = app
        .get(&format!("/app/{tenant}/endpoint/{endpoint}/"))
        .await;
    assert_eq!(still["disabled"], false, "not toggled");
    let (_, list) = app.get(&format!("/app/{tenant}/endpoint/")).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "none added or deleted"
    );
    assert_eq!(
        app.attempts_of(&tenant, &message).await.len(),
        1,
        "nothing re-sent"
    );
}

#[tokio::test]
async fn portal_access_refuses_feature_flags_rather_than_ignoring_them() {
    let app = spawn_app().await;
    let tenant = app.create_app("Tenant A").await;

    let (status, error) = app
        .post(
            &format!("/auth/app-portal-access/{tenant}/"),
            json!({"featureFlags": ["beta"]}),
        )
        .await;
    let (empty, _) = app
        .post(
            &format!("/auth/app-portal-access/{tenant}/"),
            json!({"featureFlags": []}),
        )
        .await;

    assert_eq!(status, 422, "{error}");
    assert!(
        crate::helpers::detail_text(&error).contains("featureFlags"),
        "{error}"
    );
    assert_eq!(empty, 200, "an empty list asks for nothing");
}

/// The newest audit entry of `tenant`: (action, target).
async fn last_audit(app: &TestApp, tenant: &str) -> (String, String) {
    let (_, audit) = app.get(&format!("/app/{tenant}/audit/?limit=1")).await;
    let entry = &audit["data"][0];
    (
        entry["action"].as_str().unwrap_or_default().to_owned(),
        entry["target"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The CSRF token of a logged-in portal session.
async fn csrf_of(app: &TestApp, tenant: &str, cookie: &str) -> String {
    let (_, _, page) = get(app, &format!("/portal/app/{tenant}"), Some(cookie)).await;
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned()
}

async fn portal_post(app: &TestApp, cookie: &str, path: &str, form: &[(&str, &str)]) -> u16 {
    client()
        .post(format!("{}{path}", base(app)))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn every_change_the_portal_offers_is_audited_limited_and_delivered_as_through_the_api() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        max_endpoints_per_app: 3,
        // Nothing waits for a poll here: a delivery that arrives was woken.
        poll_interval: std::time::Duration::from_secs(3600),
        ..crate::helpers::Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let (_, made) = app
        .post(&format!("/app/{tenant}/token/"), json!({"name": "api"}))
        .await;
    let api_token = made["token"].as_str().unwrap().to_owned();
    let cookie = log_in(&app, &portal_token(&app, &tenant).await).await;
    let csrf = csrf_of(&app, &tenant, &cookie).await;
    let api = |method: reqwest::Method, path: String, body: Option<serde_json::Value>| {
        let token = api_token.clone();
        let app = &app;
        async move {
            let (status, text) = app.request_as(Some(&token), method, &path, body).await;
            assert!((200..300).contains(&status), "{path}: {status} {text}");
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()
        }
    };

    // Two endpoints, one made through each door; strictly ordered, so no
    // delivery to them is leased on the fast path.
    let through_api = api(
        reqwest::Method::POST,
        format!("/app/{tenant}/endpoint/"),
        Some(json!({"url": receiver.url("/api"), "strictOrdering": true})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        last_audit(&app, &tenant).await,
        ("endpoint.created".to_owned(), through_api.clone())
    );
    let status = portal_post(
        &app,
        &cookie,
        &format!("/portal/app/{tenant}/endpoints/new"),
        &[
            ("csrf", &csrf),
            ("url", &receiver.url("/portal")),
            ("events", "all"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (_, list) = app.get(&format!("/app/{tenant}/endpoint/")).await;
    let through_portal = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == receiver.url("/portal"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        last_audit(&app, &tenant).await,
        ("endpoint.created".to_owned(), through_portal.clone()),
        "the portal's creation is audited like the API's"
    );
    api(
        reqwest::Method::PATCH,
        format!("/app/{tenant}/endpoint/{through_portal}/"),
        Some(json!({"strictOrdering": true})),
    )
    .await;
    let message = app
        .send(&tenant, "contact.created", json!({"contactId": "c1"}))
        .await;
    receiver.wait_for(2, WAIT).await;

    // Each change, through the API and through the portal: the same audit
    // entry (action and target).
    let ep = |id: &str| format!("/portal/app/{tenant}/endpoint/{id}");
    // (what, API method, API path, API body, portal path, portal form, audit action)
    type Change<'a> = (
        &'a str,
        reqwest::Method,
        String,
        Option<serde_json::Value>,
        String,
        Vec<(&'a str, String)>,
        &'a str,
    );
    let cases: Vec<Change> = vec![
        (
            "edit",
            reqwest::Method::PATCH,
            format!("/app/{tenant}/endpoint/{through_api}/"),
            Some(json!({"description": "CRM"})),
            format!("{}/edit", ep(&through_portal)),
            vec![
                ("url", receiver.url("/portal")),
                ("events", "all".into()),
                ("description", "CRM".into()),
            ],
            "endpoint.updated",
        ),
        (
            "rotate",
            reqwest::Method::POST,
            format!("/app/{tenant}/endpoint/{through_api}/secret/rotate/"),
            Some(json!({})),
            format!("{}/rotate", ep(&through_portal)),
            vec![],
            "endpoint.secret_rotated",
        ),
        (
            "recover",
            reqwest::Method::POST,
            format!("/app/{tenant}/endpoint/{through_api}/recover/"),
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
            format!("{}/recover", ep(&through_portal)),
            vec![("since", "2020-01-01T00:00".into()), ("offset", "0".into())],
            "endpoint.recovery_started",
        ),
        (
            "retry",
            reqwest::Method::POST,
            format!("/app/{tenant}/msg/{message}/endpoint/{through_api}/resend/"),
            None,
            format!("{}/activity/retry", ep(&through_portal)),
            vec![("message", message.clone())],
            "message.resent",
        ),
        (
            "test event",
            reqwest::Method::POST,
            format!("/app/{tenant}/endpoint/{through_api}/send-example/"),
            Some(json!({"eventType": "call.completed"})),
            format!("{}/test", ep(&through_portal)),
            vec![("event_type", "call.completed".into())],
            "endpoint.test_event_sent",
        ),
        (
            "disable",
            reqwest::Method::PATCH,
            format!("/app/{tenant}/endpoint/{through_api}/"),
            Some(json!({"disabled": true})),
            format!("{}/toggle", ep(&through_portal)),
            vec![],
            "endpoint.updated",
        ),
        (
            "alert rules",
            reqwest::Method::PUT,
            format!("/app/{tenant}/alert-rules/"),
            Some(json!({"events": ["endpoint.disabled"]})),
            format!("/portal/app/{tenant}/alerts"),
            vec![("events", "endpoint.disabled".into())],
            "alert_rules.updated",
        ),
        (
            "open the inspector",
            reqwest::Method::POST,
            format!("/app/{tenant}/inspector/"),
            None,
            format!("/portal/app/{tenant}/inspector"),
            vec![],
            "inspector.opened",
        ),
        (
            "close the inspector",
            reqwest::Method::DELETE,
            format!("/app/{tenant}/inspector/"),
            None,
            format!("/portal/app/{tenant}/inspector/delete"),
            vec![],
            "inspector.closed",
        ),
        (
            "delete",
            reqwest::Method::DELETE,
            format!("/app/{tenant}/endpoint/{through_api}/"),
            None,
            format!("{}/delete", ep(&through_portal)),
            vec![],
            "endpoint.deleted",
        ),
    ];
    for (what, method, api_path, body, portal_path, form, action) in cases {
        let before = receiver.requests().len();
        api(method, api_path, body).await;
        let by_api = last_audit(&app, &tenant).await;
        if what == "close the inspector" {
            // Something to close through the portal too (and a newer entry
            // than the API's, so the portal's own entry is what is read).
            api(
                reqwest::Method::POST,
                format!("/app/{tenant}/inspector/"),
                None,
            )
            .await;
        }
        let mut fields: Vec<(&str, &str)> = vec![("csrf", &csrf)];
        fields.extend(form.iter().map(|(k, v)| (*k, v.as_str())));
        let status = portal_post(&app, &cookie, &portal_path, &fields).await;
        assert!(
            status == 303 || status == 200,
            "{what} through the portal: {status}"
        );
        let by_portal = last_audit(&app, &tenant).await;

        assert_eq!(by_api.0, action, "{what} through the API");
        assert_eq!(by_portal.0, action, "{what} through the portal");
        let target = |id: &str| {
            if action.starts_with("alert_rules") || action.starts_with("inspector") {
                tenant.clone()
            } else {
                id.to_owned()
            }
        };
        assert_eq!(by_api.1, target(&through_api), "{what}");
        assert_eq!(by_portal.1, target(&through_portal), "{what}");
        if matches!(what, "retry" | "test event") {
            // A strictly ordered endpoint's delivery is woken, not polled
            // for (the poll is an hour here).
            receiver.wait_for(before + 2, WAIT).await;
        }
    }

    // The endpoint limit holds through the portal: 3 endpoints, then no more.
    for n in 0..3 {
        app.create_endpoint(&tenant, &receiver.url(&format!("/more{n}")), None)
            .await;
    }
    let status = portal_post(
        &app,
        &cookie,
        &format!("/portal/app/{tenant}/endpoints/new"),
        &[
            ("csrf", &csrf),
            ("url", &receiver.url("/one-too-many")),
            ("events", "all"),
        ],
    )
    .await;
    assert_eq!(status, 422, "the portal refuses a fourth endpoint");
    let (_, list) = app.get(&format!("/app/{tenant}/endpoint/")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_token_rate_limit_holds_through_the_portal() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        token_rate_limit: Some(3),
        ..crate::helpers::Options::default()
    })
    .await;
    let tenant = app.create_app("Acme").await;
    let token = portal_token(&app, &tenant).await;
    let cookie = log_in(&app, &token).await;

    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, headers, _) = get(&app, &format!("/portal/app/{tenant}"), Some(&cookie)).await;
        statuses.push((status, headers.get("retry-after").is_some()));
    }

    assert!(
        statuses
            .iter()
            .any(|(status, retry)| *status == 429 && *retry),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn an_endpoints_activity_log_shows_what_waits_for_a_retry_and_when() {
    // A retry an hour away: the delivery waits, pending, while we look.
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        retry_schedule: "1h",
        ..Default::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.always("/down", crate::helpers::Reply::Status(500));
    let tenant = app.create_app("Tenant").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/down"), None)
        .await;
    let message = app
        .send(&tenant, "call.failed", json!({"callId": "call_9"}))
        .await;
    crate::helpers::attempted(&app, &tenant, &message, 1).await;

    let cookie = log_in(&app, &portal_token(&app, &tenant).await).await;
    let log = format!("/portal/app/{tenant}/endpoint/{endpoint}/activity");
    let page = crate::helpers::eventually(WAIT, "the pending retry on the page", || async {
        let (status, _, page) = get(&app, &log, Some(&cookie)).await;
        assert_eq!(status, 200);
        page.contains("Waiting to be sent").then_some(page)
    })
    .await;
    let section = &page[page.find("Waiting to be sent").unwrap()..];
    let section = &section[..section.find("</table>").unwrap()];
    assert!(section.contains(&message), "{section}");
    assert!(section.contains("call.failed"), "{section}");
    assert!(section.contains("data-status=\"pending\""), "{section}");
    assert!(
        section.contains(" UTC"),
        "the next attempt's time is shown: {section}"
    );
    // The app-wide log and later pages of the endpoint's log do not list it.
    let (_, _, app_log) = get(
        &app,
        &format!("/portal/app/{tenant}/activity"),
        Some(&cookie),
    )
    .await;
    assert!(!app_log.contains("Waiting to be sent"), "{app_log}");
}
