//! Several `herald serve` processes on one PostgreSQL database: a process
//! killed mid-run loses nothing, and a PostgreSQL outage turns into 503s
//! and a full recovery rather than hangs, 500s or lost messages.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{eventually, Receiver, Reply, Server, TestDatabase, POSTGRES, TOKEN};

const MESSAGES: usize = 5_000;
const SENDERS: usize = 24;

/// Fast leases so a dead process's work moves on within the test.
fn scale_env(database: &TestDatabase) -> Vec<(&'static str, String)> {
    let mut env = database.env();
    env.push(("HERALD_LEASE_SECONDS", "4".into()));
    env.push(("HERALD_REQUEST_TIMEOUT", "2".into()));
    env.push(("HERALD_DATABASE_MAX_CONNECTIONS", "8".into()));
    env
}

/// (message id, endpoint path) pairs the receiver has seen, with counts.
fn received_pairs(receiver: &Receiver) -> HashMap<(String, String), usize> {
    let mut pairs = HashMap::new();
    for request in receiver.requests() {
        *pairs
            .entry((request.header("webhook-id"), request.path.clone()))
            .or_insert(0) += 1;
    }
    pairs
}

#[tokio::test]
async fn three_processes_lose_nothing_when_one_is_killed_mid_run() {
    let _shared = POSTGRES.read().await;
    let Some(database) = TestDatabase::create("the three-process crash test").await else {
        return;
    };
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let env = scale_env(&database);
    // Started together: their migrations race for the advisory lock.
    let mut servers: Vec<Server> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| Server::start(&env)))
            .collect();
        starting.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let app = servers[0]
        .post(&client, "/app/", json!({"name": "Acme"}))
        .await;
    let app = app["id"].as_str().unwrap().to_owned();
    let paths = ["/crm", "/chat"];
    for path in paths {
        servers[0]
            .post(
                &client,
                &format!("/app/{app}/endpoint/"),
                json!({"url": receiver.url(path)}),
            )
            .await;
    }
    let addresses = Arc::new(Mutex::new(
        servers.iter().map(|s| s.address).collect::<Vec<_>>(),
    ));
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicUsize::new(0));

    // Senders spread messages over the three processes; a refused request
    // moves on to the next process, so every message is accepted once.
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (client, addresses, accepted, next, app) = (
            client.clone(),
            addresses.clone(),
            accepted.clone(),
            next.clone(),
            app.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut target = sender;
            loop {
                let n = next.fetch_add(1, Ordering::AcqRel);
                if n >= MESSAGES {
                    return;
                }
                loop {
                    let address = addresses.lock().unwrap()[target % 3];
                    target += 1;
                    let response = client
                        .post(format!("http://{address}/api/v1/app/{app}/msg/"))
                        .bearer_auth(TOKEN)
                        .json(&json!({"eventType": "call.completed", "payload": {"n": n}}))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    if let Ok(response) = response {
                        if response.status() == 202 {
                            let body: serde_json::Value = response.json().await.unwrap();
                            accepted
                                .lock()
                                .unwrap()
                                .insert(body["id"].as_str().unwrap().to_owned());
                            break;
                        }
                    }
                }
            }
        }));
    }
    eventually(
        Duration::from_secs(60),
        "half the messages to be accepted",
        || async { (accepted.lock().unwrap().len() >= MESSAGES / 2).then_some(()) },
    )
    .await;
    let victim = servers.remove(1);
    victim.kill();
    // Every delivery in flight anywhere at this instant holds a lease: an
    // upper bound on the attempts the kill can cause to be repeated.
    let in_flight: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries WHERE status = 1 AND lease_until IS NOT NULL",
    )
    .fetch_one(&mut database.connect().await)
    .await
    .unwrap();
    let restarted = Server::start(&env);
    addresses.lock().unwrap()[1] = restarted.address;
    servers.push(restarted);
    for sender in senders {
        sender.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), MESSAGES);

    let started = Instant::now();
    let pairs = eventually(
        Duration::from_secs(90),
        "every accepted pair to arrive",
        || async {
            let pairs = received_pairs(&receiver);
            let complete = accepted.iter().all(|id| {
                paths
                    .iter()
                    .all(|p| pairs.contains_key(&(id.clone(), (*p).to_owned())))
            });
            complete.then_some(pairs)
        },
    )
    .await;
    let duplicates: usize = pairs
        .iter()
        .filter(|((id, _), _)| accepted.contains(id))
        .map(|(_, count)| count - 1)
        .sum();
    eprintln!(
        "crash test: {} pairs delivered, {duplicates} duplicates, {in_flight} deliveries in flight at the kill, drained {:?} after the last send",
        accepted.len() * paths.len(),
        started.elapsed()
    );
    assert!(
        duplicates as i64 <= in_flight,
        "{duplicates} duplicates exceed the {in_flight} attempts in flight at the kill"
    );
    drop(servers);
    database.drop_database().await;
}

/// Runs `HERALD_TEST_POSTGRES_CTL <action>` (e.g. `pg_ctlcluster … main stop`).
fn postgres_ctl(action: &str) -> bool {
    let Ok(command) = std::env::var("HERALD_TEST_POSTGRES_CTL") else {
        return false;
    };
    let mut words = command.split_whitespace();
    let status = std::process::Command::new(words.next().unwrap())
        .args(words)
        .arg(action)
        .status()
        .expect("the PostgreSQL control command runs");
    assert!(status.success(), "`{command} {action}` failed");
    true
}

/// Stops PostgreSQL and starts it again when dropped, even if the test fails.
struct PostgresStopped;

impl PostgresStopped {
    fn stop() -> Self {
        assert!(postgres_ctl("stop"));
        Self
    }
}

impl Drop for PostgresStopped {
    fn drop(&mut self) {
        postgres_ctl("start");
    }
}

#[tokio::test]
async fn a_postgresql_outage_gives_503s_and_then_everything_is_delivered() {
    let _exclusive = POSTGRES.write().await;
    if std::env::var("HERALD_TEST_POSTGRES_CTL").is_err() {
        crate::helpers::skip_or_fail(
            "the outage test",
            "set HERALD_TEST_POSTGRES_CTL to a command that takes stop/start",
        );
        return;
    }
    let Some(database) = TestDatabase::create("the outage test").await else {
        return;
    };
    let receiver = Receiver::start().await;
    // Slow answers keep deliveries in flight while PostgreSQL goes away, so
    // recording their attempts fails and their leases must run out.
    receiver.always(
        "/hook",
        crate::helpers::Reply::Delay(Duration::from_millis(1500)),
    );
    let client = reqwest::Client::new();
    let mut env = scale_env(&database);
    env.push(("HERALD_DATABASE_ACQUIRE_TIMEOUT", "2".into()));
    let server = Server::start(&env);
    let app = server.post(&client, "/app/", json!({"name": "Acme"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    server
        .post(
            &client,
            &format!("/app/{app}/endpoint/"),
            json!({"url": receiver.url("/hook")}),
        )
        .await;
    let send = |n: usize| {
        client
            .post(format!("http://{}/api/v1/app/{app}/msg/", server.address))
            .bearer_auth(TOKEN)
            .json(&json!({"eventType": "call.started", "payload": {"n": n}}))
            .timeout(Duration::from_secs(30))
            .send()
    };
    let mut accepted = HashSet::new();
    for n in 0..50 {
        let response = send(n).await.unwrap();
        assert_eq!(response.status(), 202);
        accepted.insert(
            response.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    let stopped = PostgresStopped::stop();
    let mut during = Vec::new();
    for n in 50..55 {
        let started = Instant::now();
        let response = send(n).await.expect("an answer, not a hang");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        during.push((status, body["code"].clone(), started.elapsed()));
    }
    let health = client
        .get(format!("http://{}/api/v1/health/", server.address))
        .send()
        .await
        .unwrap()
        .status();
    drop(stopped);

    for (status, code, took) in &during {
        assert_eq!(*status, 503, "during the outage: {status} {code}");
        assert_eq!(code, "database_unavailable");
        assert!(
            *took < Duration::from_secs(10),
            "answered in {took:?}, not a hang"
        );
    }
    assert_eq!(health, 503, "health reports the outage");
    let recovered = eventually(
        Duration::from_secs(30),
        "the API to accept again",
        || async {
            match send(1000).await {
                Ok(response) if response.status() == 202 => Some(
                    response.json::<serde_json::Value>().await.unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ),
                _ => None,
            }
        },
    )
    .await;
    accepted.insert(recovered);
    for n in 60..110 {
        let response = send(n).await.unwrap();
        assert_eq!(response.status(), 202, "after the outage");
        accepted.insert(
            response.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    eventually(
        Duration::from_secs(60),
        "every accepted message to arrive",
        || async {
            let received: HashSet<String> = receiver
                .requests()
                .iter()
                .map(|r| r.header("webhook-id"))
                .collect();
            received.is_superset(&accepted).then_some(())
        },
    )
    .await;
    drop(server);
    database.drop_database().await;
}

#[tokio::test]
async fn an_api_only_process_hands_new_messages_to_a_worker_process_at_once() {
    let _shared = POSTGRES.read().await;
    let Some(database) = TestDatabase::create("the api/worker split test").await else {
        return;
    };
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let mut api_env = scale_env(&database);
    api_env.push(("HERALD_ROLE", "api".into()));
    let mut worker_env = scale_env(&database);
    worker_env.push(("HERALD_ROLE", "worker".into()));
    // Left to its own polling the worker would look again only in 10 minutes.
    worker_env.push(("HERALD_POLL_INTERVAL", "600".into()));
    let api = Server::start(&api_env);
    let worker = Server::start(&worker_env);
    let app = api.post(&client, "/app/", json!({"name": "Acme"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    api.post(
        &client,
        &format!("/app/{app}/endpoint/"),
        json!({"url": receiver.url("/hook")}),
    )
    .await;
    let refused = client
        .get(format!("http://{}/api/v1/app/", worker.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404, "a worker serves no API");

    let message = api
        .post(
            &client,
            &format!("/app/{app}/msg/"),
            json!({"eventType": "call.started", "payload": {}}),
        )
        .await;

    // Only the notification can wake the worker within this wait.
    let request = &receiver.wait_for(1, Duration::from_secs(30)).await[0];
    assert_eq!(
        request.header("webhook-id"),
        message["id"].as_str().unwrap()
    );
    drop((api, worker));
    database.drop_database().await;
}

/// An endpoint's rate limit holds across processes: two workers share its
/// send slots through the database instead of each sending at the full rate.
#[tokio::test]
async fn a_rate_limit_holds_across_worker_processes() {
    let _shared = POSTGRES.read().await;
    let Some(database) = TestDatabase::create("the shared rate limit test").await else {
        return;
    };
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let env = |role: &str| {
        let mut env = database.env();
        env.push(("HERALD_ROLE", role.to_owned()));
        // Room within a lease for several paced sends per worker.
        env.push(("HERALD_LEASE_SECONDS", "10".into()));
        env.push(("HERALD_REQUEST_TIMEOUT", "2".into()));
        env
    };
    let api = Server::start(&env("api"));
    let workers = [Server::start(&env("worker")), Server::start(&env("worker"))];
    let app = api.post(&client, "/app/", json!({"name": "Acme"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    api.post(
        &client,
        &format!("/app/{app}/endpoint/"),
        json!({"url": receiver.url("/paced"), "rateLimit": 4}),
    )
    .await;
    for n in 0..40 {
        api.post(
            &client,
            &format!("/app/{app}/msg/"),
            json!({"eventType": "call.started", "payload": {"n": n}}),
        )
        .await;
    }

    let first = receiver.wait_for(1, Duration::from_secs(30)).await[0].at;
    tokio::time::sleep_until((first + Duration::from_secs(5)).into()).await;
    let in_five_seconds = receiver
        .requests()
        .iter()
        .filter(|r| r.at < first + Duration::from_secs(5))
        .count();
    // 4 per second in all (each worker alone would send 4 per second).
    assert!(
        (17..=23).contains(&in_five_seconds),
        "{in_five_seconds} in 5 s at 4/s"
    );
    // Everything arrives, once.
    let all = receiver.wait_for(40, Duration::from_secs(30)).await;
    let mut ids: Vec<String> = all.iter().map(|r| r.header("webhook-id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "each message once");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 40, "no duplicates");
    drop((api, workers));
    database.drop_database().await;
}

/// A delivery that waited in one process until its lease could no longer
/// cover an attempt is left to the next claim: sent anyway, it went out a
/// second time from the process that had claimed it meanwhile.
#[tokio::test]
async fn a_delivery_whose_lease_ran_out_while_it_waited_is_not_sent_twice() {
    let _shared = POSTGRES.read().await;
    let Some(database) = TestDatabase::create("the lease-in-memory test").await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.always("/slow", Reply::Delay(Duration::from_millis(600)));
    let client = reqwest::Client::new();
    let mut env = database.env();
    env.push(("HERALD_LEASE_SECONDS", "3".into()));
    env.push(("HERALD_REQUEST_TIMEOUT", "1".into()));
    // Two slots: the messages it leases as they are accepted wait for one.
    let mut busy_env = env.clone();
    busy_env.push(("HERALD_MAX_IN_FLIGHT", "2".into()));
    let busy = Server::start(&busy_env);
    let mut worker_env = env;
    worker_env.push(("HERALD_ROLE", "worker".into()));
    let worker = Server::start(&worker_env);
    let app = busy.post(&client, "/app/", json!({"name": "Acme"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    busy.post(
        &client,
        &format!("/app/{app}/endpoint/"),
        json!({"url": receiver.url("/slow")}),
    )
    .await;

    const SENT: usize = 30;
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..SENT {
        let request = client
            .post(format!("http://{}/api/v1/app/{app}/msg/", busy.address))
            .bearer_auth(TOKEN)
            .json(&json!({"eventType": "call.started", "payload": {"n": n}}));
        sends.spawn(async move {
            let message: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            message["id"].as_str().unwrap().to_owned()
        });
    }
    let mut ids = HashSet::new();
    while let Some(id) = sends.join_next().await {
        ids.insert(id.unwrap());
    }
    assert_eq!(ids.len(), SENT);

    // 30 attempts of 600 ms over two slots take 9 s, past the 3 s
    // leases: the other process claims what waited too long.
    receiver.wait_for(SENT, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pairs = received_pairs(&receiver);
    let delivered: HashSet<String> = pairs.keys().map(|(id, _)| id.clone()).collect();
    assert_eq!(delivered, ids, "every message delivered");
    let twice: Vec<_> = pairs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let metrics = busy.metrics(&client).await;
    let ran_out = metrics
        .lines()
        .find_map(|line| line.strip_prefix("herald_leases_ran_out_total "))
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(ran_out > 0.0, "some waited past their lease:\n{metrics}");
    drop((busy, worker));
    database.drop_database().await;
}

#[tokio::test]
async fn a_database_that_refuses_connections_answers_503_never_500() {
    let _shared = POSTGRES.read().await;
    let Some(database) = TestDatabase::create("the refused-connections test").await else {
        return;
    };
    let client = reqwest::Client::new();
    let mut env = scale_env(&database);
    env.push(("HERALD_DATABASE_ACQUIRE_TIMEOUT", "2".into()));
    let server = Server::start(&env);
    let app = server.post(&client, "/app/", json!({"name": "Acme"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    let (mut admin, name) = database.connect_admin().await;
    let name = name.to_owned();
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1",
    )
    .bind(&name)
    .execute(&mut admin)
    .await
    .unwrap();

    let mut statuses = Vec::new();
    for n in 0..10 {
        let requests = [
            client
                .post(format!("http://{}/api/v1/app/{app}/msg/", server.address))
                .json(&json!({"eventType": "call.started", "payload": {"n": n}})),
            client.get(format!("http://{}/api/v1/app/", server.address)),
            client.get(format!(
                "http://{}/api/v1/app/{app}/endpoint/",
                server.address
            )),
            client.get(format!("http://{}/api/v1/health/", server.address)),
        ];
        for request in requests {
            let response = request
                .bearer_auth(TOKEN)
                .timeout(Duration::from_secs(20))
                .send()
                .await
                .expect("an answer, not a hang");
            let retry_after = response.headers().contains_key("retry-after");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            statuses.push((status, retry_after, body["code"].clone()));
        }
    }
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true"
    ))
    .execute(&mut admin)
    .await
    .unwrap();

    for (status, retry_after, code) in &statuses {
        assert_eq!(*status, 503, "while connections are refused: {code}");
        assert!(retry_after, "a 503 says when to retry: {code}");
    }
    eventually(
        Duration::from_secs(30),
        "the API to accept again",
        || async {
            let response = client
                .post(format!("http://{}/api/v1/app/{app}/msg/", server.address))
                .bearer_auth(TOKEN)
                .json(&json!({"eventType": "call.started", "payload": {}}))
                .send()
                .await
                .ok()?;
            (response.status() == 202).then_some(())
        },
    )
    .await;
    drop(admin);
    drop(server);
    database.drop_database().await;
}
