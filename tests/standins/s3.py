"""An S3-compatible object store, as far as Carebase uses it: PUT, GET and DELETE of an object in one
bucket (path-style addressing), and presigned GETs with ``response-content-*`` overrides.

It checks AWS Signature Version 4 the way S3 does: the canonical request is rebuilt from the
request as it arrived (method, raw path, query, the headers the client says it signed, the payload
hash) and signed with the secret the stand-in knows. Written from AWS's documentation
("Authenticating Requests (AWS Signature Version 4)", header and query-string variants) and
apart from the code under test, so a signer that only agrees with itself still fails here.
Errors are S3's XML bodies with S3's codes and statuses.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from tests.standins.base import Handler, Received, StandIn

SKEW_SECONDS = 15 * 60  # S3 refuses a header-signed request dated further from its clock
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^,]+), ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})")


def s3_error(status: int, code: str, message: str, resource: str = "", **extra: str) -> Response:
    fields = "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{resource}</Resource>{fields}<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>")
    return Response(body, status_code=status, media_type="application/xml")


def _encode(value: str, slash: bool = False) -> str:
    # RFC 3986 unreserved characters stay; everything else is %XY of its UTF-8 bytes.
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.~" or (slash and ch == "/"))
                   else "".join(f"%{b:02X}" for b in ch.encode()) for ch in value)


def _query_pairs(raw: bytes) -> list[tuple[str, str]]:
    pairs = []
    for part in raw.decode("latin-1").split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))  # '+' is a plus in S3 queries, not a space
    return pairs


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    etag: str
    last_modified: float


class S3StandIn(StandIn):
    def __init__(self, bucket: str = "carebase-files", region: str = "us-east-1") -> None:
        self.bucket = bucket
        self.region = region
        self.access_key_id = "AKIA" + secrets.token_hex(8).upper()
        self.secret_access_key = secrets.token_urlsafe(30)
        self.objects: dict[str, StoredObject] = {}
        self.clock = time.time  # tests move it to expire presigned URLs
        super().__init__()

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [(method, "/{bucket}/{key:path}", self.object) for method in ("PUT", "GET", "DELETE")]

    # -- the object API ------------------------------------------------------------------------

    async def object(self, request: Request, received: Received) -> Response:
        bucket, key = request.path_params["bucket"], request.path_params["key"]
        resource = f"/{bucket}/{key}"
        refused = self.authenticate(request, received)
        if refused is not None:
            return refused
        if bucket != self.bucket:
            return s3_error(404, "NoSuchBucket", "The specified bucket does not exist", resource, BucketName=bucket)
        if received.method == "PUT":
            if "content-length" not in received.headers:  # S3 takes no plain chunked upload
                return s3_error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.",
                                resource)
            etag = '"' + hashlib.md5(received.body).hexdigest() + '"'  # noqa: S324 - S3's ETag is MD5
            self.objects[key] = StoredObject(received.body, received.headers.get("content-type",
                                                                                 "binary/octet-stream"),
                                             etag, self.clock())
            return Response(status_code=200, headers={"ETag": etag})
        if received.method == "DELETE":
            self.objects.pop(key, None)  # S3 answers 204 whether or not the key existed
            return Response(status_code=204)
        obj = self.objects.get(key)
        if obj is None:
            return s3_error(404, "NoSuchKey", "The specified key does not exist.", resource, Key=key)
        query = dict(_query_pairs(request.scope["query_string"]))
        headers = {"ETag": obj.etag, "Last-Modified": formatdate(obj.last_modified, usegmt=True),
                   "Content-Type": query.get("response-content-type", obj.content_type)}
        if "response-content-disposition" in query:
            headers["Content-Disposition"] = query["response-content-disposition"]
        return Response(obj.data, status_code=200, headers=headers)

    # -- Signature Version 4 -------------------------------------------------------------------

    def authenticate(self, request: Request, received: Received) -> Response | None:
        """None when the request is signed with our secret and in time, else S3's refusal."""
        query = _query_pairs(request.scope["query_string"])
        params = dict(query)
        resource = request.url.path
        if "X-Amz-Signature" in params:
            return self._check_presigned(request, received, query, params, resource)
        auth = received.headers.get("authorization")
        if not auth:
            return s3_error(403, "AccessDenied", "Access Denied", resource)
        match = _AUTH.fullmatch(auth.strip())
        if not match:
            return s3_error(400, "AuthorizationHeaderMalformed", "The authorization header is malformed.", resource)
        credential, signed_headers, signature = match.groups()
        date = received.headers.get("x-amz-date", "")
        refused = self._check_credential(credential, date, resource)
        if refused is not None:
            return refused
        try:
            at = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError:
            return s3_error(403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header",
                            resource)
        if abs(at - self.clock()) > SKEW_SECONDS:
            return s3_error(403, "RequestTimeTooSkewed",
                            "The difference between the request time and the current time is too large.", resource)
        payload_hash = received.headers.get("x-amz-content-sha256")
        if payload_hash is None:
            return s3_error(400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256",
                            resource)
        if payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(received.body).hexdigest():
            return s3_error(400, "XAmzContentSHA256Mismatch",
                            "The provided 'x-amz-content-sha256' header does not match what was computed.", resource)
        names = signed_headers.split(";")
        unsigned = [h for h in received.headers if h.startswith("x-amz-") and h not in names]
        if "host" not in names or unsigned:
            return s3_error(403, "AccessDenied", "There were headers present in the request which were not signed",
                            resource, HeadersNotSigned=",".join(unsigned or ["host"]))
        return self._check_signature(request, query, names, payload_hash, date, signature, resource)

    def _check_presigned(self, request: Request, received: Received, query: list[tuple[str, str]],
                         params: dict[str, str], resource: str) -> Response | None:
        needed = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders")
        if any(name not in params for name in needed) or params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
            return s3_error(400, "AuthorizationQueryParametersError",
                            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
                            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
                            resource)
        date = params["X-Amz-Date"]
        refused = self._check_credential(params["X-Amz-Credential"], date, resource)
        if refused is not None:
            return refused
        expires = params["X-Amz-Expires"]
        if not expires.isdigit() or not 1 <= int(expires) <= 604800:
            return s3_error(400, "AuthorizationQueryParametersError",
                            "X-Amz-Expires must be less than a week (in seconds) that is 604800", resource)
        try:
            at = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError:
            return s3_error(400, "AuthorizationQueryParametersError", "X-Amz-Date must be in the ISO8601 Long Format "
                            "\"yyyyMMdd'T'HHmmss'Z'\"", resource)
        names = params["X-Amz-SignedHeaders"].split(";")
        if "host" not in names:
            return s3_error(403, "AccessDenied", "There were headers present in the request which were not signed",
                            resource, HeadersNotSigned="host")
        refused = self._check_signature(request, [(k, v) for k, v in query if k != "X-Amz-Signature"], names,
                                        "UNSIGNED-PAYLOAD", date, params["X-Amz-Signature"], resource)
        if refused is not None:
            return refused
        # S3 checks expiry after the signature: a forged URL is never told it merely expired.
        if self.clock() > at + int(expires):
            return s3_error(403, "AccessDenied", "Request has expired", resource, **{"X-Amz-Expires": expires},
                            Expires=datetime.fromtimestamp(at + int(expires), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            ServerTime=datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return None

    def _check_credential(self, credential: str, date: str, resource: str) -> Response | None:
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or parts[3] != "s3":
            return s3_error(400, "AuthorizationHeaderMalformed", "The authorization header is malformed; the "
                            "Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".",
                            resource)
        if parts[0] != self.access_key_id:
            return s3_error(403, "InvalidAccessKeyId",
                            "The AWS Access Key Id you provided does not exist in our records.", resource,
                            AWSAccessKeyId=parts[0])
        if parts[2] != self.region:
            return s3_error(400, "AuthorizationHeaderMalformed", f"The authorization header is malformed; the "
                            f"region '{parts[2]}' is wrong; expecting '{self.region}'", resource, Region=self.region)
        if parts[1] != date[:8]:
            return s3_error(403, "SignatureDoesNotMatch", "The credential date does not match the request date.",
                            resource)
        return None

    def _check_signature(self, request: Request, query: list[tuple[str, str]], names: list[str], payload_hash: str,
                         date: str, signature: str, resource: str) -> Response | None:
        # S3 reads the path decoded, then encodes it once more for the canonical form.
        path = _encode(unquote(request.scope["raw_path"].decode("latin-1")), slash=True)
        canonical_query = "&".join(f"{k}={v}" for k, v in sorted((_encode(k), _encode(v)) for k, v in query))
        headers = []
        for name in names:
            values = request.headers.getlist(name)
            if not values:
                return s3_error(403, "SignatureDoesNotMatch", f"Signed header {name} is missing.", resource)
            headers.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
        canonical = "\n".join([request.method, path, canonical_query, "".join(headers), ";".join(names),
                               payload_hash])
        scope = f"{date[:8]}/{self.region}/s3/aws4_request"
        string_to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope,
                                    hashlib.sha256(canonical.encode()).hexdigest()])
        key = f"AWS4{self.secret_access_key}".encode()
        for part in (date[:8], self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape")):
            return s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the "
                            "signature you provided. Check your key and signing method.", resource,
                            AWSAccessKeyId=self.access_key_id, StringToSign=string_to_sign,
                            CanonicalRequest=canonical)
        return None

    def reset(self) -> None:
        super().reset()
        self.objects.clear()
        self.clock = time.time

