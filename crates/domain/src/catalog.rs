//! The built-in event catalog seeded on first start: the events of a
//! conversation platform, each with a JSON Schema and a realistic example.

use serde_json::{json, Value};

/// One shipped event type.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema (draft 2020-12) of the payload, carrying the example in `examples`.
    pub schema: Value,
    pub example: Value,
}

/// All twelve shipped event types, in a stable order.
pub fn builtin() -> Vec<CatalogEntry> {
    let call = |extra: Value, required: &[&str], example: Value| {
        object_schema(
            merge(
                json!({
                    "callId": {"type": "string", "description": "Platform id of the call."},
                    "direction": {"type": "string", "enum": ["inbound", "outbound"]},
                    "from": {"type": "string", "description": "Caller number, E.164."},
                    "to": {"type": "string", "description": "Callee number, E.164."},
                    "agentId": {"type": ["string", "null"]},
                    "contactId": {"type": ["string", "null"]}
                }),
                extra,
            ),
            &[&["callId", "direction", "from", "to"], required].concat(),
            example,
        )
    };
    let contact_properties = json!({
        "contactId": {"type": "string"},
        "firstName": {"type": ["string", "null"]},
        "lastName": {"type": ["string", "null"]},
        "email": {"type": ["string", "null"], "format": "email"},
        "phone": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}}
    });
    let campaign_properties = json!({
        "campaignId": {"type": "string"},
        "name": {"type": "string"},
        "channel": {"type": "string", "enum": ["voice", "sms", "whatsapp", "email"]}
    });
    let integration_properties = json!({
        "integrationId": {"type": "string"},
        "provider": {"type": "string", "description": "e.g. salesforce, hubspot, zendesk"},
        "connectedBy": {"type": ["string", "null"]}
    });

    vec![
        entry(
            "call.started",
            "A call was answered and is now in progress.",
            call(
                json!({"startedAt": {"type": "string", "format": "date-time"}}),
                &["startedAt"],
                json!({
                    "callId": "call_2Nf8sK1xQ", "direction": "inbound",
                    "from": "+14155550123", "to": "+14155550199",
                    "agentId": "agent_41", "contactId": "contact_9912",
                    "startedAt": "2026-11-26T09:30:12Z"
                }),
            ),
        ),
        entry(
            "call.completed",
            "A call ended normally. Carries its duration and, when enabled, the recording.",
            call(
                json!({
                    "startedAt": {"type": "string", "format": "date-time"},
                    "endedAt": {"type": "string", "format": "date-time"},
                    "durationSeconds": {"type": "integer", "minimum": 0},
                    "recordingUrl": {"type": ["string", "null"], "format": "uri"},
                    "disposition": {"type": "string"}
                }),
                &["startedAt", "endedAt", "durationSeconds"],
                json!({
                    "callId": "call_2Nf8sK1xQ", "direction": "inbound",
                    "from": "+14155550123", "to": "+14155550199",
                    "agentId": "agent_41", "contactId": "contact_9912",
                    "startedAt": "2026-11-26T09:30:12Z", "endedAt": "2026-11-26T09:36:47Z",
                    "durationSeconds": 395,
                    "recordingUrl": "https://recordings.example.com/call_2Nf8sK1xQ.mp3",
                    "disposition": "resolved"
                }),
            ),
        ),
        entry(
            "call.failed",
            "A call could not be connected (busy, no answer, carrier error).",
            call(
                json!({
                    "reason": {"type": "string", "enum": ["busy", "no_answer", "rejected", "carrier_error"]},
                    "sipCode": {"type": ["integer", "null"]}
                }),
                &["reason"],
                json!({
                    "callId": "call_2Nf9aa7Lm", "direction": "outbound",
                    "from": "+14155550199", "to": "+442071838750",
                    "agentId": "agent_41", "contactId": null,
                    "reason": "no_answer", "sipCode": 480
                }),
            ),
        ),
        contact_entry(
            "contact.created",
            "A contact was added to the address book.",
            &contact_properties,
            json!({"contactId": "contact_9912", "firstName": "Ada", "lastName": "Lovelace",
                   "email": "ada@example.com", "phone": "+14155550123", "tags": ["vip"]}),
        ),
        contact_entry(
            "contact.updated",
            "A contact's details changed; `changes` lists the fields.",
            &merge(
                contact_properties.clone(),
                json!({"changes": {"type": "array", "items": {"type": "string"}}}),
            ),
            json!({"contactId": "contact_9912", "firstName": "Ada", "lastName": "King",
                   "email": "ada@example.com", "phone": "+14155550123", "tags": ["vip"],
                   "changes": ["lastName"]}),
        ),
        contact_entry(
            "contact.deleted",
            "A contact was deleted.",
            &json!({"contactId": {"type": "string"}, "deletedBy": {"type": ["string", "null"]}}),
            json!({"contactId": "contact_9912", "deletedBy": "user_7"}),
        ),
        campaign_entry(
            "campaign.started",
            "A campaign began sending.",
            &campaign_properties,
            json!({"campaignId": "cmp_summer", "name": "Summer renewals", "channel": "voice", "audienceSize": 1200}),
        ),
        campaign_entry(
            "campaign.completed",
            "A campaign finished; carries its final counts.",
            &merge(
                campaign_properties.clone(),
                json!({"reached": {"type": "integer"}, "failed": {"type": "integer"}}),
            ),
            json!({"campaignId": "cmp_summer", "name": "Summer renewals", "channel": "voice", "reached": 1043, "failed": 157}),
        ),
        campaign_entry(
            "campaign.paused",
            "A campaign was paused by a user or by a schedule.",
            &merge(
                campaign_properties.clone(),
                json!({"pausedBy": {"type": ["string", "null"]}}),
            ),
            json!({"campaignId": "cmp_summer", "name": "Summer renewals", "channel": "voice", "pausedBy": "user_7"}),
        ),
        campaign_entry(
            "campaign.resumed",
            "A paused campaign resumed sending.",
            &campaign_properties,
            json!({"campaignId": "cmp_summer", "name": "Summer renewals", "channel": "voice"}),
        ),
        entry(
            "integration.connected",
            "A third-party integration (CRM, helpdesk) was connected.",
            object_schema(
                integration_properties.clone(),
                &["integrationId", "provider"],
                json!({"integrationId": "int_sf_01", "provider": "salesforce", "connectedBy": "user_7"}),
            ),
        ),
        entry(
            "integration.disconnected",
            "An integration was disconnected, by a user or because its credentials expired.",
            object_schema(
                merge(
                    integration_properties,
                    json!({"reason": {"type": "string"}}),
                ),
                &["integrationId", "provider"],
                json!({"integrationId": "int_sf_01", "provider": "salesforce", "connectedBy": "user_7", "reason": "token_expired"}),
            ),
        ),
    ]
}

fn contact_entry(
    name: &'static str,
    description: &'static str,
    properties: &Value,
    example: Value,
) -> CatalogEntry {
    entry(
        name,
        description,
        object_schema(properties.clone(), &["contactId"], example),
    )
}

fn campaign_entry(
    name: &'static str,
    description: &'static str,
    properties: &Value,
    example: Value,
) -> CatalogEntry {
    entry(
        name,
        description,
        object_schema(properties.clone(), &["campaignId", "name"], example),
    )
}

/// The uid of the application that receives Herald's own operational
/// events; its endpoints are the operators'.
pub const OPERATIONS_APP_UID: &str = "herald-operations";

/// Herald's operational events (SPEC §5), sent to the operations app.
pub fn operational() -> Vec<CatalogEntry> {
    let endpoint = |extra: Value, required: &[&str], example: Value| {
        object_schema(
            merge(
                json!({
                    "appId": {"type": "string", "description": "The application of the endpoint."},
                    "endpointId": {"type": "string"},
                    "url": {"type": "string"}
                }),
                extra,
            ),
            &[&["appId", "endpointId", "url"], required].concat(),
            example,
        )
    };
    let ids = json!({"appId": "app_01J9Z3T4M5N6P7Q8R9S0T1V2W3", "endpointId": "ep_01J9Z3T4M5N6P7Q8R9S0T1V2W4",
                     "url": "https://crm.example.com/webhooks"});
    let with = |extra: Value| merge(ids.clone(), extra);
    vec![
        entry(
            "endpoint.disabled",
            "Herald disabled an endpoint: it answered 410 Gone, or every attempt failed for the configured period.",
            endpoint(
                json!({"reason": {"type": "string", "enum": ["gone", "failing"]},
                       "failingSince": {"type": ["string", "null"], "format": "date-time"}}),
                &["reason"],
                with(json!({"reason": "failing", "failingSince": "2026-11-21T09:30:00.000Z"})),
            ),
        ),
        entry(
            "endpoint.failing",
            "An endpoint's latest attempts have all failed (the configured number in a row).",
            endpoint(
                json!({"consecutiveFailures": {"type": "integer"},
                       "failingSince": {"type": "string", "format": "date-time"}}),
                &["consecutiveFailures", "failingSince"],
                with(json!({"consecutiveFailures": 5, "failingSince": "2026-11-26T09:30:00.000Z"})),
            ),
        ),
        entry(
            "endpoint.success_rate_dropped",
            "An endpoint's success rate over the window fell below the threshold.",
            endpoint(
                json!({"successRate": {"type": "number"}, "attempts": {"type": "integer"},
                       "threshold": {"type": "number"}}),
                &["successRate", "attempts", "threshold"],
                with(json!({"successRate": 0.62, "attempts": 240, "threshold": 0.9})),
            ),
        ),
        entry(
            "message.attempt.exhausted",
            "A message's retries to an endpoint ran out: the delivery failed for good.",
            endpoint(
                json!({"msgId": {"type": "string"}, "failingSince": {"type": ["string", "null"], "format": "date-time"}}),
                &["msgId"],
                with(json!({"msgId": "msg_01J9Z3T4M5N6P7Q8R9S0T1V2W5", "failingSince": "2026-11-26T09:30:00.000Z"})),
            ),
        ),
        entry(
            "message.attempt.recovered",
            "An endpoint whose deliveries had run out of retries is answering again.",
            endpoint(
                json!({"msgId": {"type": "string"}, "failingSince": {"type": "string", "format": "date-time"}}),
                &["msgId", "failingSince"],
                with(json!({"msgId": "msg_01J9Z3T4M5N6P7Q8R9S0T1V2W6", "failingSince": "2026-11-26T09:30:00.000Z"})),
            ),
        ),
    ]
}

fn entry(name: &'static str, description: &'static str, schema: Value) -> CatalogEntry {
    let example = schema["examples"][0].clone();
    CatalogEntry {
        name,
        description,
        schema,
        example,
    }
}

fn object_schema(properties: Value, required: &[&str], example: Value) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "examples": [example]
    })
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventTypeName;

    #[test]
    fn the_catalog_holds_the_twelve_specified_types() {
        let names: Vec<_> = builtin().iter().map(|e| e.name).collect();
        assert_eq!(names.len(), 12);
        for expected in [
            "call.started",
            "call.completed",
            "call.failed",
            "contact.created",
            "contact.updated",
            "contact.deleted",
            "campaign.started",
            "campaign.completed",
            "campaign.paused",
            "campaign.resumed",
            "integration.connected",
            "integration.disconnected",
        ] {
            assert!(names.contains(&expected), "{expected} missing");
        }
    }

    #[test]
    fn every_example_carries_the_required_fields_of_its_schema() {
        for entry in builtin().into_iter().chain(operational()) {
            EventTypeName::parse(entry.name).unwrap();
            assert!(entry.example.is_object(), "{} has no example", entry.name);
            for field in entry.schema["required"].as_array().unwrap() {
                let field = field.as_str().unwrap();
                assert!(
                    entry.example.get(field).is_some(),
                    "{}: example lacks required `{field}`",
                    entry.name
                );
            }
        }
    }
}
