"""The platform's own endpoints and the HTTP edge every request passes: health, readiness,
metrics, the OpenAPI document, request ids, and problem+json for 404, 405, 413 and 500."""

from __future__ import annotations

import re
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ProcessServer, assert_problem, bearer, login

PROBLEM_JSON = "application/problem+json"
MAX_BODY = 2 * 1024 * 1024
AUTH_PATHS = {
    "/api/v1/auth/register": "post", "/api/v1/auth/token": "post", "/api/v1/auth/refresh": "post",
    "/api/v1/auth/logout": "post", "/api/v1/auth/otp/request": "post", "/api/v1/auth/otp/verify": "post",
    "/api/v1/me": "get",
}


def requests_total(client: httpx.Client, **labels: str) -> float:
    """The value of carebase_http_requests_total for one label set (0 if never seen)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "carebase_http_requests_total" and \
                    all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def json_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    head, tail = b'{"given_name": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def registered_events(owner) -> int:
    return owner.execute("SELECT count(*) FROM events WHERE type = 'patients.registered'").fetchone()[0]


# -- health, readiness, metrics ----------------------------------------------------------------


def test_health_answers_ok(client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_ready_reports_the_migrated_database(client, owner):
    r = client.get("/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready"
    assert body["database"] == "ok"
    assert body["revision"] == owner.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_metrics_count_requests_per_route_and_status(client):
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "carebase_http_requests_total" in r.text
    assert "carebase_http_request_seconds" in r.text

    before = requests_total(client, method="GET", route="/health", status="200")
    for _ in range(3):
        client.get("/health")
    assert requests_total(client, method="GET", route="/health", status="200") == before + 3


def test_metrics_label_unknown_paths_by_route_not_by_path(client):
    """Random paths must not create a time series each (and must not leak into the metrics)."""
    path = f"/no-such-page-{uuid.uuid4().hex}"
    before = requests_total(client, method="GET", status="404", route="unmatched")
    assert client.get(path).status_code == 404
    assert requests_total(client, method="GET", status="404", route="unmatched") == before + 1
    assert path not in client.get("/metrics").text


# -- OpenAPI -----------------------------------------------------------------------------------


def _refs(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for v in node.values() for ref in _refs(v)]
    if isinstance(node, list):
        return [ref for v in node for ref in _refs(v)]
    return []


def _resolve(spec: dict, ref: str):
    assert ref.startswith("#/"), ref
    node = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_openapi_document_is_valid_and_lists_the_auth_api(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    spec = r.json()
    assert re.fullmatch(r"3\.\d+\.\d+", spec["openapi"])
    assert spec["info"]["title"] == "Carebase" and spec["info"]["version"]

    for path, method in AUTH_PATHS.items():
        assert method in spec["paths"].get(path, {}), f"{method.upper()} {path} is not documented"
    form = spec["paths"]["/api/v1/auth/token"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    form_schema = _resolve(spec, form["schema"]["$ref"]) if "$ref" in form["schema"] else form["schema"]
    assert {"username", "password"} <= set(form_schema["required"])

    operation_ids = []
    for path, ops in spec["paths"].items():
        declared = {p["name"] for op in ops.values() if isinstance(op, dict)
                    for p in op.get("parameters", []) if p.get("in") == "path"}
        assert set(re.findall(r"{(\w+)}", path)) <= declared, f"{path}: a path parameter is not declared"
        for method, op in ops.items():
            assert method in {"get", "put", "post", "delete", "options", "head", "patch", "trace"}, method
            assert op.get("responses"), f"{method} {path} documents no response"
            assert all(re.fullmatch(r"[1-5]\d\d|[1-5]XX|default", code) for code in op["responses"]), op["responses"]
            operation_ids.append(op["operationId"])
    assert len(operation_ids) == len(set(operation_ids)), "operationIds are not unique"
    for ref in set(_refs(spec)):
        _resolve(spec, ref)  # KeyError when a $ref points nowhere


# -- request ids -------------------------------------------------------------------------------


def test_every_kind_of_response_carries_a_fresh_request_id(client):
    tokens = login(client, "receptionist@demo.carebase.local")
    answers = [
        client.get("/health"), client.get("/ready"), client.get("/metrics"), client.get("/api/v1/openapi.json"),
        client.get("/"),
        client.get("/no-such-page"), client.delete("/health"),
        client.get("/api/v1/me"),  # 401
        client.get("/api/v1/me", headers=bearer(tokens)),
        client.post("/api/v1/patients", json={}, headers=bearer(tokens)),  # 422
        client.post("/api/v1/patients", content=json_of_size(MAX_BODY + 1),
                    headers={**bearer(tokens), "Content-Type": "application/json"}),  # 413
        client.post("/api/v1/auth/token", data={"username": "receptionist@demo.carebase.local",
                                                "password": "carebase-demo"}),
    ]
    statuses = {a.status_code for a in answers}
    assert {200, 401, 404, 405, 413, 422} <= statuses
    ids = [a.headers.get("x-request-id") for a in answers]
    assert all(ids), [(a.request.method, a.request.url.path, a.status_code) for a in answers
                      if not a.headers.get("x-request-id")]
    assert len(set(ids)) == len(ids), "request ids repeat"
    assert all(re.fullmatch(r"[A-Za-z0-9-]{1,64}", i) for i in ids)


def test_a_valid_incoming_request_id_is_echoed_and_an_invalid_one_replaced(client):
    mine = f"client-{uuid.uuid4().hex[:12]}"
    assert client.get("/health", headers={"X-Request-ID": mine}).headers["x-request-id"] == mine
    missing = client.get("/no-such-page", headers={"X-Request-ID": mine})
    assert assert_problem(missing, 404, "not-found")["request_id"] == mine
    for bad in ("x" * 65, "has spaces", "semi;colon", "<script>"):
        got = client.get("/health", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert got != bad
        assert re.fullmatch(r"[A-Za-z0-9-]{1,64}", got)


# -- problem+json at the edge ------------------------------------------------------------------


def test_unknown_route_is_404_problem_json(client):
    for method, path in (("GET", "/no-such-page"), ("GET", "/api/v1/no-such-thing"), ("POST", "/api/v1/nothing")):
        body = assert_problem(client.request(method, path), 404, "not-found")
        assert body["instance"] == path


def test_wrong_method_is_405_problem_json_with_allow(client):
    for method, path, supported in (("DELETE", "/health", {"GET"}), ("PUT", "/api/v1/patients", {"GET", "POST"}),
                                    ("GET", "/api/v1/auth/token", {"POST"})):
        r = client.request(method, path)
        assert_problem(r, 405, "method-not-allowed")
        allow = {m.strip() for m in r.headers["allow"].split(",")}
        # Starlette names the methods of the first route matching the path, so for a path served by
        # two routes (GET and POST /patients) the header lists one of them: never the wrong ones.
        assert allow and allow <= supported | {"HEAD"}, allow
        assert method not in allow


def test_body_over_2_mb_is_413_problem_json_and_writes_nothing(client, owner):
    tokens = login(client, "receptionist@demo.carebase.local")
    headers = {**bearer(tokens), "Content-Type": "application/json"}
    events = registered_events(owner)
    for extra in ({}, {"Idempotency-Key": f"big-{uuid.uuid4().hex}"}):
        r = client.post("/api/v1/patients", content=json_of_size(MAX_BODY + 1), headers={**headers, **extra})
        assert_problem(r, 413, "payload-too-large")
    # Exactly the limit is still read (and refused for what it says, not for its size).
    at_limit = client.post("/api/v1/patients", content=json_of_size(MAX_BODY), headers=headers)
    assert_problem(at_limit, 422, "validation-failed")
    assert registered_events(owner) == events
    # Without a token too: the size is checked before anything else.
    assert_problem(client.post("/api/v1/auth/register", content=json_of_size(MAX_BODY + 1),
                               headers={"Content-Type": "application/json"}), 413, "payload-too-large")


def test_chunked_body_over_2_mb_is_413_problem_json(client):
    """No Content-Length to trust: the limit must hold while the body streams in."""
    tokens = login(client, "receptionist@demo.carebase.local")
    body = json_of_size(3 * 1024 * 1024)

    def chunks():
        for i in range(0, len(body), 64 * 1024):
            yield body[i:i + 64 * 1024]

    r = client.post("/api/v1/patients", content=chunks(),
                    headers={**bearer(tokens), "Content-Type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert_problem(r, 413, "payload-too-large")


def test_an_internal_error_is_problem_json_with_the_request_id(backend, owner):
    """A failure inside a command (injected at the event store's commit) answers 500 problem+json,
    traceable by its request id, and applies nothing."""
    srv = ProcessServer(backend, CAREBASE_FAILPOINTS="eventstore.before_commit=error")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            tokens = login(c, "receptionist@demo.carebase.local")
            name = f"Boom-{uuid.uuid4().hex[:10]}"
            rid = f"boom-{uuid.uuid4().hex[:12]}"
            r = c.post("/api/v1/patients", json={"given_name": name, "family_name": "B", "birth_date": "1990-01-01"},
                       headers={**bearer(tokens), "X-Request-ID": rid})
    finally:
        srv.stop()
    assert r.status_code == 500, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    assert r.json()["code"] == "internal-error"
    assert "failpoint" not in r.text  # no internals in the answer
    assert owner.execute("SELECT count(*) FROM patients WHERE given_name = %s", (name,)).fetchone()[0] == 0
    assert r.headers.get("x-request-id") == rid
    assert r.json()["request_id"] == rid
