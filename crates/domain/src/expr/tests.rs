use serde_json::json;

use super::*;

fn input(data: &serde_json::Value) -> Input<'_> {
    Input {
        event_type: "call.completed",
        data,
        channels: &[],
        event_id: Some("evt_1"),
        timestamp: "2026-12-02T10:00:00.000Z",
    }
}

fn filter(source: &str, data: serde_json::Value) -> Result<bool, EvalError> {
    compile(source).expect("compiles").matches(&input(&data))
}

fn render(source: &str, data: serde_json::Value) -> Result<serde_json::Value, EvalError> {
    let bytes = compile(source).expect("compiles").render(&input(&data))?;
    Ok(serde_json::from_slice(&bytes).expect("JSON"))
}

#[test]
fn nested_macros_keep_their_own_accumulators() {
    let data = json!({"a": [1, 2, 3], "b": [2, 3, 4]});
    assert_eq!(
        render("data.a.map(x, data.b.filter(y, y == x))", data.clone()),
        Ok(json!([[], [2], [3]]))
    );
    assert_eq!(
        render("data.a.filter(x, data.b.exists(y, y == x))", data),
        Ok(json!([2, 3]))
    );
}

#[test]
fn a_filter_reads_the_message_s_fields() {
    let inbound = json!({"direction": "inbound", "durationSeconds": 42});
    let outbound = json!({"direction": "outbound", "durationSeconds": 42});
    let source = r#"data.direction == "inbound""#;
    assert_eq!(filter(source, inbound.clone()), Ok(true));
    assert_eq!(filter(source, outbound), Ok(false));
    assert_eq!(
        filter("type.startsWith('call.') && eventId == 'evt_1'", json!({})),
        Ok(true)
    );
    assert_eq!(
        filter(
            "data.durationSeconds > 30.5 && data.durationSeconds < 60",
            inbound.clone()
        ),
        Ok(true)
    );
    assert_eq!(
        filter("has(data.agent) || size(channels) == 0", inbound.clone()),
        Ok(true)
    );
    assert_eq!(
        filter(
            "data.tags.exists(t, t == 'vip')",
            json!({"tags": ["a", "vip"]})
        ),
        Ok(true)
    );
    assert_eq!(
        filter(
            "data.tags.all(t, t.size() == 1)",
            json!({"tags": ["a", "vip"]})
        ),
        Ok(false)
    );
    assert_eq!(
        filter("'vip' in data.tags", json!({"tags": ["vip"]})),
        Ok(true)
    );
    assert_eq!(
        filter("data.n.matches('^[0-9]+$')", json!({"n": "0123"})),
        Ok(true)
    );
    // A missing field is an error, and a decisive other side wins over it.
    assert!(matches!(
        filter("data.missing == 1", inbound.clone()),
        Err(EvalError::Failed(_))
    ));
    assert_eq!(
        filter("data.missing == 1 || true", inbound.clone()),
        Ok(true)
    );
    assert!(matches!(
        filter("data.direction", inbound),
        Err(EvalError::Failed(_))
    ));
}

#[test]
fn a_transformation_yields_the_body() {
    let data = json!({"callId": "call_7", "durationSeconds": 42, "items": [1, 2, 3]});
    let slack = r#"{"text": "Call " + data.callId + " completed in " + string(data.durationSeconds) + " s"}"#;
    assert_eq!(
        render(slack, data.clone()),
        Ok(json!({"text": "Call call_7 completed in 42 s"}))
    );
    assert_eq!(
        render("{'doubled': data.items.map(x, x * 2), 'odd': data.items.filter(x, x % 2 == 1), 'one': data.items.exists_one(x, x == 2)}", data.clone()),
        Ok(json!({"doubled": [2, 4, 6], "odd": [1, 3], "one": true}))
    );
    assert_eq!(render("data", data.clone()), Ok(data.clone()));
    assert_eq!(
        render("[type, timestamp, data.items[1], 7 / 2, 7.0 / 2]", data),
        Ok(json!([
            "call.completed",
            "2026-12-02T10:00:00.000Z",
            2,
            3,
            3.5
        ]))
    );
}

#[test]
fn mistakes_are_refused_when_saved_with_the_reason() {
    for (source, said) in [
        ("data.direction ==", "syntax error"),
        ("foo == 1", "unknown name `foo`"),
        ("exec('rm')", "unknown function `exec`"),
        ("data.x.matches(data.y)", "string literal"),
        ("data.x.matches('(')", "pattern"),
        ("{'a': 1, 'a': 2}", "repeats the key"),
        (&"(".repeat(200), "nests brackets"),
        (&("1".to_owned() + &" + 1".repeat(100)), "levels deep"),
        (&"x".repeat(5000), "bytes long"),
        ("", "is empty"),
    ] {
        let error = compile(source).expect_err(source).0;
        assert!(error.contains(said), "{source:.40}: {error}");
    }
}

#[test]
fn an_expression_that_tries_to_blow_its_budget_fails_fast() {
    let list: Vec<u32> = (0..1000).collect();
    let data = json!({"items": list, "big": "x".repeat(100_000)});
    for source in [
        // A nested comprehension: a million steps.
        "data.items.map(x, data.items.map(y, x * y)).size() > 0",
        "data.items.exists(x, data.items.exists(y, data.items.exists(z, x + y + z < 0)))",
        // String explosion: each step copies the payload's string.
        "data.items.map(x, data.big + data.big).size() > 0",
        "data.items.filter(x, data.big.replace('x', 'yyyyyyyyyy').size() > 0).size() > 0",
    ] {
        assert_eq!(
            filter(source, data.clone()),
            Err(EvalError::Budget),
            "{source}"
        );
        assert_eq!(
            render(source, data.clone()),
            Err(EvalError::Budget),
            "{source}"
        );
    }
    let deep = "[".repeat(30) + &"]".repeat(30);
    assert!(render(&deep, data.clone()).is_ok());
}

#[test]
fn the_cache_compiles_each_source_once() {
    let a = cached("data.a == 1").unwrap();
    let b = cached("data.a == 1").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(cached("data.a ==").is_err());
}

#[test]
fn filters_spend_less_than_transformations_and_a_message_s_filters_share_one_budget() {
    let items: Vec<u32> = (0..2000).collect();
    let data = json!({"items": items});
    // About 16,000 units: past a filter's budget, within a transformation's.
    let source = "data.items.filter(x, x % 7 == 3).size() > 2";
    assert_eq!(filter(source, data.clone()), Err(EvalError::Budget));
    assert_eq!(render(source, data.clone()), Ok(json!(true)));

    let cheap = compile("data.items.size() > 1").unwrap();
    let costly = compile("data.items.exists(x, x == 900)").unwrap();
    let mut left = FANOUT_BUDGET;
    assert_eq!(
        cheap.matches_within(&input(&data), &mut left, later()),
        Ok(true)
    );
    assert!(FANOUT_BUDGET - left < 10, "a cheap filter spends little");
    // Each costly filter spends what it needs, until one finds too little left.
    let before = left;
    assert_eq!(
        costly.matches_within(&input(&data), &mut left, later()),
        Ok(true)
    );
    let each = before - left;
    assert!(each > 2_000 && each < FILTER_BUDGET, "{each}");
    let mut passed = 1;
    while costly.matches_within(&input(&data), &mut left, later()) == Ok(true) {
        passed += 1;
    }
    assert_eq!(passed, before / each, "{each} units each");
    assert_eq!(left, 0);
    assert_eq!(
        cheap.matches_within(&input(&data), &mut left, later()),
        Err(EvalError::Budget)
    );
}

/// A deadline no test reaches.
fn later() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(60)
}

#[test]
fn a_pattern_is_charged_for_its_automaton_times_its_input_before_it_runs() {
    // 150,000 random 0s and 1s: the `regex` crate's engines spend seconds
    // on this pattern (ten thousand states per byte), so it must never run.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let bits: String = (0..150_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed & 1 == 0 {
                '0'
            } else {
                '1'
            }
        })
        .collect();
    let data = json!({"s": bits});
    // Refused before it runs: running would have answered false, seconds later.
    assert_eq!(
        filter("data.s.matches('1[01]{10000}[^01]')", data.clone()),
        Err(EvalError::Budget),
        "a filter"
    );
    assert_eq!(
        render("data.s.matches('1[01]{10000}[^01]')", data),
        Err(EvalError::Budget),
        "a transformation"
    );

    // The same pattern on a short string is cheap enough to run, and the
    // charge grows with both the pattern and the input.
    let spent = |source: &str, text: &str| {
        let program = compile(source).unwrap();
        let data = json!({"s": text});
        let mut left = FANOUT_BUDGET;
        let outcome = program.matches_within(&input(&data), &mut left, later());
        (outcome, FANOUT_BUDGET - left)
    };
    let (outcome, small) = spent("data.s.matches('^[0-9]{10}$')", "0123456789");
    assert_eq!(outcome, Ok(true));
    let (_, longer_input) = spent("data.s.matches('^[0-9]{10}$')", &"0".repeat(1000));
    let (_, bigger_pattern) = spent("data.s.matches('^[0-9]{100}$')", "0123456789");
    assert!(small < 100, "a ten-digit check is cheap: {small}");
    assert!(longer_input > 10 * small, "{longer_input} vs {small}");
    assert!(bigger_pattern > 5 * small, "{bigger_pattern} vs {small}");
}

#[test]
fn an_expression_past_its_deadline_stops_with_deadline() {
    let items: Vec<u32> = (0..2000).collect();
    let data = json!({"items": items});
    let costly = compile("data.items.exists(x, x == 1999)").unwrap();
    let mut left = FANOUT_BUDGET;
    let past = std::time::Instant::now();
    assert_eq!(
        costly.matches_within(&input(&data), &mut left, past),
        Err(EvalError::Deadline),
        "thousands of units read the clock and find the deadline passed"
    );
    let cheap = compile("data.items.size() > 1").unwrap();
    let mut left = FANOUT_BUDGET;
    assert_eq!(
        cheap.matches_within(&input(&data), &mut left, past),
        Ok(true),
        "a filter of a few units never reads the clock"
    );
}
