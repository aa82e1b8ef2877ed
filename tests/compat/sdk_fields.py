"""Walks every field of the installed Svix SDK's request models for the
routes Herald serves, and shows that each one either takes effect (Herald
answers 2xx and the field shows in what it answers or stores) or is refused
with 422 naming the field. A field a newer SDK adds, which this table does
not know, must therefore be refused: were it accepted and dropped, this
walk fails. Runs with whichever `svix` is installed (the suite runs it with
each pinned major line). Reads HERALD_URL and HERALD_TOKEN; prints
"svix field walk passed: N fields" at the end."""

import datetime
import json
import os
import sys
import typing
import urllib.error
import urllib.request
import uuid

import pydantic
import svix
from svix import models

URL = os.environ["HERALD_URL"].rstrip("/")
TOKEN = os.environ["HERALD_TOKEN"]
SINK = "http://127.0.0.1:9/walk"  # deliveries fail: only what Herald stores matters
KEY = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        URL + path,
        data=data,
        method=method,
        headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        return error.code, json.loads(text) if text else None


def made(method, path, body):
    status, answer = call(method, path, body)
    assert 200 <= status < 300, f"{method} {path} {body}: {status} {answer}"
    return answer


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# Fresh resources for the walk.
APP = made("POST", "/api/v1/app/", {"name": "Field walk", "uid": unique("walk")})["id"]
ENDPOINT = made("POST", f"/api/v1/app/{APP}/endpoint/", {"url": SINK})["id"]
# Test events go to an endpoint the walk leaves enabled.
EXAMPLES = made("POST", f"/api/v1/app/{APP}/endpoint/", {"url": SINK})["id"]
EVENT_TYPE = made("POST", "/api/v1/event-type/", {"name": unique("walk") + ".done", "description": "d"})["name"]


def secret_is(key):
    return lambda answer: made("GET", f"/api/v1/app/{APP}/endpoint/{ENDPOINT}/secret/", None)["key"] == key


def headers_have(name):
    return lambda answer: name in made("GET", f"/api/v1/app/{APP}/endpoint/{ENDPOINT}/headers/", None)["headers"]


def answer_has(field, value):
    return lambda answer: answer is not None and answer.get(field) == value


def accepted(answer):
    return True


def shown(field, value):
    """The field sent as `value` and read back from the answer."""
    return (lambda: value, answer_has(field, value))


def endpoint_read(path, check):
    """A check on what a new endpoint's `path` answers (its secret, its
    headers)."""
    return lambda answer: check(made("GET", f"/api/v1/app/{APP}/endpoint/{answer['id']}/{path}", None))


SCHEMAS = {"1": {"type": "object", "properties": {"callId": {"type": "string"}}}}
NOW = datetime.datetime.now(datetime.timezone.utc)
SINCE = (NOW - datetime.timedelta(hours=1)).isoformat()

# What each served model is sent to, with the smallest valid body.
ROUTES = {
    "ApplicationIn": ("POST", lambda: "/api/v1/app/", lambda: {"name": "Walk"}),
    "ApplicationPatch": ("PATCH", lambda: f"/api/v1/app/{APP}/", lambda: {}),
    "EndpointIn": ("POST", lambda: f"/api/v1/app/{APP}/endpoint/", lambda: {"url": SINK}),
    "EndpointUpdate": ("PUT", lambda: f"/api/v1/app/{APP}/endpoint/{ENDPOINT}/", lambda: {"url": SINK}),
    "EndpointPatch": ("PATCH", lambda: f"/api/v1/app/{APP}/endpoint/{ENDPOINT}/", lambda: {}),
    "EndpointHeadersIn": ("PUT", lambda: f"/api/v1/app/{APP}/endpoint/{ENDPOINT}/headers/", lambda: {"headers": {}}),
    "EndpointHeadersPatchIn": ("PATCH", lambda: f"/api/v1/app/{APP}/endpoint/{ENDPOINT}/headers/", lambda: {"headers": {}}),
    "EndpointSecretRotateIn": ("POST", lambda: f"/api/v1/app/{APP}/endpoint/{ENDPOINT}/secret/rotate/", lambda: {}),
    "RecoverIn": ("POST", lambda: f"/api/v1/app/{APP}/endpoint/{ENDPOINT}/recover/", lambda: {"since": SINCE}),
    "EventExampleIn": ("POST", lambda: f"/api/v1/app/{APP}/endpoint/{EXAMPLES}/send-example/", lambda: {"eventType": "call.started"}),
    "MessageIn": ("POST", lambda: f"/api/v1/app/{APP}/msg/", lambda: {"eventType": "call.started", "payload": {}}),
    "EventTypeIn": ("POST", lambda: "/api/v1/event-type/", lambda: {"name": unique("walk") + ".done", "description": "d"}),
    "EventTypeUpdate": ("PUT", lambda: f"/api/v1/event-type/{EVENT_TYPE}/", lambda: {"description": "d"}),
    "EventTypePatch": ("PATCH", lambda: f"/api/v1/event-type/{EVENT_TYPE}/", lambda: {}),
    "AppPortalAccessIn": ("POST", lambda: f"/api/v1/auth/app-portal-access/{APP}/", lambda: {}),
    "EndpointTransformationIn": ("PATCH", lambda: f"/api/v1/app/{APP}/endpoint/{EXAMPLES}/transformation/", lambda: {}),
    "EndpointTransformationPatch": ("PATCH", lambda: f"/api/v1/app/{APP}/endpoint/{EXAMPLES}/transformation/", lambda: {}),
    "ApplicationTokenExpireIn": ("POST", lambda: f"/api/v1/auth/app/{APP}/expire-all/", lambda: {}),
    "MessagePrecheckIn": ("POST", lambda: f"/api/v1/app/{APP}/msg/precheck/active/", lambda: {"eventType": "call.started"}),
}

# (model, field) -> (value, check on the answer): the fields Herald does
# something with. Every other field of these models must be refused.
known = {}
for model in ("ApplicationIn", "ApplicationPatch"):
    known[(model, "name")] = (lambda: "Walk 2", answer_has("name", "Walk 2"))
    known[(model, "uid")] = shown("uid", unique("walk"))
    known[(model, "metadata")] = (lambda: {"k": "v"}, answer_has("metadata", {"k": "v"}))
    known[(model, "rate_limit")] = (lambda: 5, answer_has("rateLimit", 5))
    known[(model, "throttle_rate")] = (lambda: 6, answer_has("rateLimit", 6))
for model in ("EndpointIn", "EndpointUpdate", "EndpointPatch"):
    known[(model, "url")] = (lambda: SINK + "/2", answer_has("url", SINK + "/2"))
    known[(model, "description")] = (lambda: "walked", answer_has("description", "walked"))
    known[(model, "uid")] = shown("uid", unique("walk"))
    known[(model, "disabled")] = (lambda: True, answer_has("disabled", True))
    known[(model, "filter_types")] = (lambda: ["call.started"], answer_has("filterTypes", ["call.started"]))
    known[(model, "event_types")] = (lambda: ["call.failed"], answer_has("filterTypes", ["call.failed"]))
    known[(model, "channels")] = (lambda: ["walk"], answer_has("channels", ["walk"]))
    known[(model, "rate_limit")] = (lambda: 3, answer_has("rateLimit", 3))
    known[(model, "throttle_rate")] = (lambda: 4, answer_has("rateLimit", 4))
    known[(model, "metadata")] = (lambda: {"k": "v"}, answer_has("metadata", {"k": "v"}))
    known[(model, "version")] = (lambda: 1, answer_has("version", 1))
known[("EndpointIn", "secret")] = (lambda: KEY, endpoint_read("secret/", lambda got: got["key"] == KEY))
known[("EndpointIn", "headers")] = (
    lambda: {"x-walk": "1"},
    endpoint_read("headers/", lambda got: got["headers"].get("x-walk") == "1"),
)
known[("EndpointHeadersIn", "headers")] = (lambda: {"x-walk": "1"}, headers_have("x-walk"))
known[("EndpointHeadersPatchIn", "headers")] = (lambda: {"x-walk-2": "1"}, headers_have("x-walk-2"))
known[("EndpointHeadersPatchIn", "delete_headers")] = (lambda: ["x-walk"], accepted)
known[("EndpointSecretRotateIn", "key")] = (lambda: KEY, secret_is(KEY))
known[("EndpointSecretRotateIn", "grace_period_seconds")] = (lambda: 60, accepted)
known[("RecoverIn", "since")] = (lambda: SINCE, accepted)
known[("RecoverIn", "until")] = (lambda: NOW.isoformat(), accepted)
known[("EventExampleIn", "event_type")] = (lambda: "call.completed", accepted)
known[("EventExampleIn", "example_index")] = (lambda: 0, accepted)
known[("MessageIn", "event_type")] = (lambda: "call.completed", answer_has("eventType", "call.completed"))
known[("MessageIn", "payload")] = (lambda: {"callId": "c1"}, answer_has("payload", {"callId": "c1"}))
known[("MessageIn", "event_id")] = shown("eventId", unique("evt"))
known[("MessageIn", "channels")] = (lambda: ["walk"], answer_has("channels", ["walk"]))
known[("MessageIn", "deliver_at")] = (
    lambda: (NOW + datetime.timedelta(hours=1)).isoformat(),
    lambda answer: (
        lambda destinations: destinations != []
        and all(d["status"] == 1 and d["nextAttempt"] > NOW.isoformat() for d in destinations)
    )(made("GET", f"/api/v1/app/{APP}/msg/{answer['id']}/endpoint/", None)["data"]),
)
for model in ("EventTypeIn", "EventTypeUpdate", "EventTypePatch"):
    known[(model, "description")] = (lambda: "walked", answer_has("description", "walked"))
    known[(model, "archived")] = (lambda: False, answer_has("archived", False))
    known[(model, "deprecated")] = (lambda: True, answer_has("deprecated", True))
    known[(model, "schemas")] = (lambda: SCHEMAS, answer_has("schemas", SCHEMAS))
    known[(model, "group_name")] = (lambda: "walk", answer_has("groupName", "walk"))
    known[(model, "feature_flag")] = (lambda: "beta", answer_has("featureFlag", "beta"))
    known[(model, "feature_flags")] = (lambda: ["beta"], answer_has("featureFlag", "beta"))
known[("EventTypeIn", "name")] = shown("name", unique("walk") + ".x")
known[("MessagePrecheckIn", "event_type")] = (lambda: "call.completed", lambda answer: answer["active"] in (True, False))
known[("MessagePrecheckIn", "channels")] = (lambda: ["walk"], lambda answer: answer["active"] in (True, False))
for model in ("EndpointTransformationIn", "EndpointTransformationPatch"):
    known[(model, "code")] = (lambda: '{"walked": true}', answer_has("code", '{"walked": true}'))
    known[(model, "enabled")] = (lambda: False, answer_has("enabled", False))
known[("ApplicationTokenExpireIn", "expiry")] = (lambda: 0, accepted)
known[("AppPortalAccessIn", "read_only")] = (lambda: True, accepted)
known[("AppPortalAccessIn", "expiry")] = (lambda: 600, accepted)
known[("AppPortalAccessIn", "session_id")] = (lambda: "s1", accepted)
known[("AppPortalAccessIn", "feature_flags")] = (lambda: [], accepted)


def any_value(annotation):
    """A value of the field's type, for fields Herald must refuse (the
    refusal names the field whatever its value)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return any_value(inner[0])
    if origin in (list, typing.List, set):
        return []
    if origin in (dict, typing.Dict):
        return {}
    if annotation is bool:
        return True
    if annotation is int:
        return 1
    if annotation is datetime.datetime:
        return (NOW + datetime.timedelta(minutes=5)).isoformat()
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return {}
    return "x"


walked = 0
failures = []
for name, (method, path, base) in ROUTES.items():
    model = getattr(models, name, None)
    if model is None:
        continue  # not in this SDK version
    for field, info in model.model_fields.items():
        alias = info.alias or field
        body = base()
        if (name, field) in known:
            value, check = known[(name, field)]
            body[alias] = value()
            status, answer = call(method, path(), body)
            if not (200 <= status < 300 and check(answer)):
                failures.append(f"{name}.{field}: sent {body}, got {status} {answer}")
        else:
            body[alias] = any_value(info.annotation)
            status, answer = call(method, path(), body)
            if status != 422 or alias not in json.dumps(answer):
                failures.append(f"{name}.{field}: neither taken nor refused by name: sent {body}, got {status} {answer}")
        walked += 1

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"svix field walk passed: {walked} fields of svix {svix.__version__}")
