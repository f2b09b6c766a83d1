"""The CapabilityStatement and the SMART configuration, both derived from the resource registry
(so they list exactly what the routes do; a test holds them to it)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from carebase.fhir.base import BASE_PATH, FHIR_VERSION, REGISTRY

EXPORT = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
SEARCH_RESULT_PARAMS = ("_count", "_offset", "_sort", "_lastUpdated", "_include", "_revinclude")
SCOPES = ["openid", "fhirUser", "launch/patient", "offline_access", "patient/*.read", "patient/*.rs", "user/*.*",
          "user/*.read", "user/*.write"]


def statement(base_url: str) -> dict[str, Any]:
    base = base_url.rstrip("/")
    resources = []
    for name in sorted(REGISTRY):
        kind = REGISTRY[name]
        entry: dict[str, Any] = {
            "type": name,
            "interaction": [{"code": code} for code in kind.interactions()],
            "versioning": "versioned" if kind.supports("vread") else "no-version",
            "readHistory": kind.supports("vread"),
            "updateCreate": False,
            "conditionalCreate": kind.supports("create"),
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
        }
        if kind.supports("search"):
            entry["searchParam"] = [{"name": p, "type": t} for p, t in sorted(kind.search_params.items())]
            entry["searchInclude"] = [f"{name}:{p}" for p in kind.includes] or None
            entry["searchRevInclude"] = sorted(f"{other}:{p}" for other, k in REGISTRY.items()
                                               for p, (target, _) in k.includes.items() if target == name) or None
        ops = [{"name": op, "definition": url} for op, url in getattr(kind, "operations", {}).items()]
        if ops:
            entry["operation"] = ops
        resources.append({k: v for k, v in entry.items() if v is not None})
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-07",
        "kind": "instance",
        "software": {"name": "Carebase", "version": version("carebase")},
        "implementation": {"description": "Carebase FHIR R4 API", "url": base + BASE_PATH},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": False,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                         "code": "SMART-on-FHIR"}]}],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [{"url": "token", "valueUri": base + "/api/v1/auth/token"}],
                }],
            },
            "resource": resources,
            "interaction": [{"code": "batch"}, {"code": "transaction"}],
            "operation": [{"name": "export", "definition": EXPORT}],
        }],
    }


def smart_configuration(base: str) -> dict[str, Any]:
    return {
        "issuer": base,
        "token_endpoint": base + "/api/v1/auth/token",
        "grant_types_supported": ["password", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": SCOPES,
        "response_types_supported": ["token"],
        "capabilities": ["client-public", "permission-patient", "permission-user", "permission-v1", "permission-v2",
                         "context-standalone-patient"],
    }
