"""File storage: the local disk and the S3 adapter behind one interface, and their signed links.

The contract tests run against both providers: the local one on a real disk with its links
downloaded from a real Carebase server, the S3 one against a stand-in that checks Signature
Version 4 the way S3 does (tests/standins/s3.py). The signer itself is checked against AWS's
published examples, so it is not only checked against a stand-in written by the same hands.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx
import pytest
from pydantic import SecretStr

from carebase.platform import storage as storage_module
from carebase.platform.errors import ValidationFailed
from carebase.platform.storage import (
    EMPTY_SHA256,
    BadSignature,
    InvalidStorageKey,
    LinkExpired,
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    SigV4,
    Storage,
    StorageError,
    StorageUnavailable,
    check_key,
    content_disposition,
)
from carebase.settings import Settings, set_settings
from tests.conftest import ThreadServer, assert_problem, free_port
from tests.standins.s3 import S3StandIn, s3_error

NAME = "Rezept für Müller – 处方 \"final\".pdf"  # non-ASCII, a quote, spaces
PDF = b"%PDF-1.7\n" + os.urandom(2048)
PUBLIC_URL = "http://carebase.test"  # the test backend's CAREBASE_PUBLIC_URL
BAD_KEYS = ["../x", "attachments/../../secret.key", "/etc/passwd", "a//b", "a/./b", ".hidden", "a/.tmp-x", "a/",
            "", "a\\b", "a b", "a/b\x00", "ä", "x" * 1025]


def run(coro):
    return asyncio.run(coro)


def new_key(area: str = "attachments") -> str:
    return f"{area}/{uuid.uuid4()}/{uuid.uuid4()}"


def saved_name(disposition: str) -> str:
    """The name a browser saves as: ``filename*`` wins over ``filename`` (RFC 6266 section 4.3).
    Decoded by the standard library's RFC 2231 code, not by ours."""
    extended = [p.strip() for p in disposition.split(";") if p.strip().startswith("filename*=")]
    assert len(extended) == 1, disposition
    msg = Message()
    msg["Content-Disposition"] = "attachment; " + extended[0]
    return msg.get_filename()


def unit_settings(tmp_path: Path, **update) -> Settings:
    return Settings(home=tmp_path, secret_key=SecretStr("unit-test-secret-" + "x" * 32), public_url=PUBLIC_URL,
                    **update)


# -- the signer, against AWS's published examples -------------------------------------------


SUITE = SigV4("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "service")
SUITE_HEADERS = {"host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z"}
S3_EXAMPLE = SigV4("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1", "s3")
S3_HOST = "examplebucket.s3.amazonaws.com"


def test_sigv4_test_suite_get_vanilla():
    # AWS Signature Version 4 test suite, "get-vanilla".
    assert SUITE.authorization("GET", "/", [], SUITE_HEADERS, EMPTY_SHA256, "20150830T123600Z") == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")


def test_sigv4_test_suite_query_order_and_utf8_path():
    # "get-vanilla-query-order-key-case": parameters are sorted before signing.
    sig, _ = SUITE.signature("GET", "/", [("Param2", "value2"), ("Param1", "value1")], SUITE_HEADERS, EMPTY_SHA256,
                             "20150830T123600Z")
    assert sig == "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
    # "get-utf8": the path is encoded as UTF-8 bytes.
    sig, _ = SUITE.signature("GET", "/\u1234", [], SUITE_HEADERS, EMPTY_SHA256, "20150830T123600Z")
    assert sig == "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"


def test_sigv4_s3_documentation_examples():
    # Amazon S3 API reference, "Signature Calculations for the Authorization Header".
    date = "20130524T000000Z"
    sig, _ = S3_EXAMPLE.signature("GET", "/test.txt", [], {
        "host": S3_HOST, "range": "bytes=0-9", "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": date},
        EMPTY_SHA256, date)
    assert sig == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    body_hash = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    sig, signed = S3_EXAMPLE.signature("PUT", "/test$file.text", [], {
        "date": "Fri, 24 May 2013 00:00:00 GMT", "host": S3_HOST, "x-amz-content-sha256": body_hash,
        "x-amz-date": date, "x-amz-storage-class": "REDUCED_REDUNDANCY"}, body_hash, date)
    assert (sig, signed) == ("98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
                             "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class")
    sig, _ = S3_EXAMPLE.signature("GET", "/", [("max-keys", "2"), ("prefix", "J")], {
        "host": S3_HOST, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": date}, EMPTY_SHA256, date)
    assert sig == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_sigv4_s3_presigned_url_example():
    # Amazon S3 API reference, "Authenticating Requests: Using Query Parameters": the whole URL.
    query = S3_EXAMPLE.presign("GET", "/test.txt", S3_HOST, "20130524T000000Z", 86400)
    assert f"https://{S3_HOST}/test.txt?{query}" == (
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
        "AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&"
        "X-Amz-Expires=86400&X-Amz-SignedHeaders=host&"
        "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")


# -- keys, names, the provider setting ------------------------------------------------------


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_are_refused(key):
    with pytest.raises(InvalidStorageKey):
        check_key(key)


@pytest.mark.parametrize("key", ["attachments/0b7e.../x", "a", "labs/2026/11/report-1.final_v2.pdf",
                                 "attachments/fca0f25e-d266-4db4-a0bf-30667f66d7c3/9ab60e8b-6600-4eee-8ad7-895d8fc0ea28"])
def test_good_keys_pass(key):
    assert check_key(key) == key


def test_content_disposition_names_the_file_for_every_browser():
    header = content_disposition(NAME)
    assert header.isascii()
    assert header.startswith('attachment; filename="Rezept f_r M_ller _ __ _final_.pdf"; ')
    assert header.endswith("filename*=UTF-8''" + quote(NAME, safe=""))
    assert saved_name(header) == NAME
    # A path, control or direction-override characters never reach the saved name.
    assert content_disposition("../etc/passwd").endswith("filename*=UTF-8''_etc_passwd")
    assert content_disposition("a\nb\u202egpj.exe").endswith("filename*=UTF-8''abgpj.exe")
    assert content_disposition("...").endswith("filename*=UTF-8''download")


def test_the_setting_chooses_the_provider(tmp_path):
    assert isinstance(storage_module.storage(unit_settings(tmp_path)), LocalStorage)
    s3 = storage_module.storage(unit_settings(tmp_path, storage_provider="s3", s3_bucket="b", s3_access_key_id="k",
                                              s3_secret_access_key=SecretStr("s")))
    assert isinstance(s3, S3Storage)
    with pytest.raises(ValueError, match="CAREBASE_STORAGE_PROVIDER='ftp'"):
        storage_module.storage(unit_settings(tmp_path, storage_provider="ftp"))
    with pytest.raises(ValueError, match="set CAREBASE_S3_BUCKET, CAREBASE_S3_ACCESS_KEY_ID, CAREBASE_S3_SECRET_"):
        storage_module.storage(unit_settings(tmp_path, storage_provider="s3"))


def test_s3_addressing_styles(tmp_path):
    common = {"storage_provider": "s3", "s3_bucket": "files", "s3_access_key_id": "k",
              "s3_secret_access_key": SecretStr("s"), "s3_region": "eu-west-1"}
    aws = S3Storage(unit_settings(tmp_path, s3_path_style=False, **common))
    url = urlsplit(aws.signed_url("a/b", expires_in=60))
    assert (url.scheme, url.netloc, url.path) == ("https", "files.s3.eu-west-1.amazonaws.com", "/a/b")
    minio = S3Storage(unit_settings(tmp_path, s3_endpoint_url="http://minio:9000/", **common))
    url = urlsplit(minio.signed_url("a/b", expires_in=60))
    assert (url.scheme, url.netloc, url.path) == ("http", "minio:9000", "/files/a/b")
    assert "X-Amz-Credential=k%2F" in url.query and "%2Feu-west-1%2Fs3%2Faws4_request" in url.query


def test_link_lifetimes_are_bounded(tmp_path):
    local = LocalStorage(unit_settings(tmp_path))
    for expires_in in (0, -5, 7 * 24 * 3600 + 1, 1.5, True):
        with pytest.raises(ValueError):
            local.signed_url("a/b", expires_in=expires_in)
    with pytest.raises(ValidationFailed):
        local.signed_url("a/b", expires_in=60, content_type="text/html\r\nSet-Cookie: x=1")


# -- the local disk -------------------------------------------------------------------------


def test_local_files_live_under_the_storage_folder_privately(tmp_path):
    store = LocalStorage(unit_settings(tmp_path))
    key = new_key()
    run(store.put(key, b"hello", "text/plain"))
    path = tmp_path / "storage" / key
    assert path.read_bytes() == b"hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]

    elsewhere = tmp_path / "elsewhere"
    store = LocalStorage(unit_settings(tmp_path, storage_path=elsewhere))
    run(store.put(key, b"there", "text/plain"))
    assert (elsewhere / key).read_bytes() == b"there"


def test_local_write_is_all_or_nothing(tmp_path, monkeypatch):
    store = LocalStorage(unit_settings(tmp_path))
    key = new_key()
    run(store.put(key, b"version 1", "text/plain"))

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(storage_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        run(store.put(key, b"version 2", "text/plain"))
    monkeypatch.undo()
    assert run(store.get(key)) == b"version 1"
    assert sorted(p.name for p in store.path_for(key).parent.iterdir()) == [key.rsplit("/", 1)[1]]


def test_local_keys_that_collide_with_folders(tmp_path):
    store = LocalStorage(unit_settings(tmp_path))
    run(store.put("a/b/c", b"x", "text/plain"))
    with pytest.raises(InvalidStorageKey):
        run(store.put("a/b", b"y", "text/plain"))  # a folder of other files
    with pytest.raises(InvalidStorageKey):
        run(store.put("a/b/c/d", b"y", "text/plain"))  # through a file
    with pytest.raises(ObjectNotFound):
        run(store.get("a/b"))
    with pytest.raises(ObjectNotFound):
        run(store.get("a/b/c/d"))
    run(store.delete("a/b"))
    assert run(store.get("a/b/c")) == b"x"


def test_local_link_checks(tmp_path):
    store = LocalStorage(unit_settings(tmp_path))
    key = new_key()
    run(store.put(key, b"x", "application/pdf"))
    url = store.signed_url(key, expires_in=60, filename="a.pdf", content_type="application/pdf")
    parts = urlsplit(url)
    assert url.startswith(f"{PUBLIC_URL}/api/v1/files/{key}?expires=")
    q = dict(parse_qsl(parts.query))
    assert set(q) == {"expires", "filename", "content_type", "sig"} and len(q["sig"]) == 64

    def open_with(key: str = key, **change: str | None) -> int:
        args = {"expires": q["expires"], "sig": q["sig"], "filename": q["filename"],
                "content_type": q["content_type"], **change}
        fh, size = store.open_link(key, **args)
        fh.close()
        return size

    assert open_with() == 1
    for change in ({"sig": "0" * 64}, {"sig": q["sig"].upper()}, {"sig": "é" * 64}, {"sig": None}, {"expires": None},
                   {"expires": str(int(q["expires"]) + 3600)}, {"filename": "b.pdf"}, {"filename": None},
                   {"content_type": "text/html"}, {"key": new_key()}):
        with pytest.raises(BadSignature):
            open_with(**change)
    later = LocalStorage(unit_settings(tmp_path), clock=lambda: time.time() + 61)
    with pytest.raises(LinkExpired, match="expired at"):
        later.open_link(key, expires=q["expires"], sig=q["sig"], filename=q["filename"],
                        content_type=q["content_type"])
    # Even a correctly signed link cannot name a path out of the storage folder (home/secret.key
    # is one level up): the key rules hold after the signature, not only when signing.
    expires = str(int(time.time()) + 60)
    with pytest.raises(InvalidStorageKey):
        store.open_link("../secret.key", expires=expires, sig=store._signature("../secret.key", expires, None, None))
    other_secret = LocalStorage(unit_settings(tmp_path).model_copy(update={"secret_key": SecretStr("another")}))
    with pytest.raises(BadSignature):
        other_secret.open_link(key, expires=q["expires"], sig=q["sig"], filename=q["filename"],
                               content_type=q["content_type"])


# -- the S3 adapter's failures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[S3StandIn]:
    with S3StandIn() as standin:
        yield standin


@pytest.fixture
def s3_settings(s3, tmp_path) -> Settings:
    s3.reset()
    return unit_settings(tmp_path, storage_provider="s3", s3_endpoint_url=s3.url, s3_bucket=s3.bucket,
                         s3_region=s3.region, s3_access_key_id=s3.access_key_id,
                         s3_secret_access_key=SecretStr(s3.secret_access_key), storage_timeout_seconds=0.5)


def test_s3_put_sends_what_s3_checks(s3, s3_settings):
    key = new_key()
    run(S3Storage(s3_settings).put(key, PDF, "application/pdf"))
    put = s3.received[-1]
    assert (put.method, put.path) == ("PUT", f"/{s3.bucket}/{key}")
    assert put.headers["x-amz-content-sha256"] == hashlib.sha256(PDF).hexdigest()
    assert put.headers["content-type"] == "application/pdf"
    assert "content-type;host;x-amz-content-sha256;x-amz-date" in put.headers["authorization"]
    assert s3.objects[key].data == PDF and s3.objects[key].content_type == "application/pdf"


def test_s3_refuses_a_wrong_secret_and_bucket(s3, s3_settings):
    wrong = s3_settings.model_copy(update={"s3_secret_access_key": SecretStr("not-the-secret")})
    with pytest.raises(StorageError, match="SignatureDoesNotMatch.*CAREBASE_S3_SECRET_ACCESS_KEY") as caught:
        run(S3Storage(wrong).put(new_key(), b"x", "text/plain"))
    assert caught.value.status == 502 and not s3.objects
    with pytest.raises(StorageError, match="InvalidAccessKeyId"):
        run(S3Storage(s3_settings.model_copy(update={"s3_access_key_id": "AKIAOTHER"})).get(new_key()))
    with pytest.raises(StorageError, match="NoSuchBucket.*CAREBASE_S3_BUCKET"):
        run(S3Storage(s3_settings.model_copy(update={"s3_bucket": "other-bucket"})).get(new_key()))
    with pytest.raises(StorageError, match="RequestTimeTooSkewed"):
        run(S3Storage(s3_settings, clock=lambda: time.time() - 3600).get(new_key()))


def test_s3_transient_failures(s3, s3_settings):
    store = S3Storage(s3_settings)
    s3.fail_next(status=500, body="<Error><Code>InternalError</Code><Message>We encountered an internal error."
                                   "</Message></Error>")
    with pytest.raises(StorageUnavailable, match="InternalError"):
        run(store.put(new_key(), b"x", "text/plain"))
    s3.fail_next(status=503, body=s3_error(503, "SlowDown", "Please reduce your request rate.").body)
    with pytest.raises(StorageUnavailable, match="SlowDown") as caught:
        run(store.get(new_key()))
    assert caught.value.status == 503
    s3.slow_next(seconds=2)
    with pytest.raises(StorageUnavailable, match="did not answer within 0.5 s"):
        run(store.delete(new_key()))
    nowhere = S3Storage(s3_settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}))
    with pytest.raises(StorageUnavailable, match="could not be reached"):
        run(nowhere.get(new_key()))


def test_s3_refuses_bad_keys_before_calling(s3, s3_settings):
    store = S3Storage(s3_settings)
    for key in ("../x", "/abs", "a//b"):
        with pytest.raises(InvalidStorageKey):
            run(store.put(key, b"x", "text/plain"))
        with pytest.raises(InvalidStorageKey):
            store.signed_url(key, expires_in=60)
    assert not s3.received


# -- the contract, for both providers ---------------------------------------------------------


@pytest.fixture(scope="module")
def files_server(backend) -> Iterator[ThreadServer]:
    """A Carebase server with the file route (mounted here until domains.ROUTERS has it)."""
    from carebase import domains
    from carebase.streams import files

    server = ThreadServer(backend.settings)
    if "carebase.streams.files" not in domains.ROUTERS:
        server.app.include_router(files.router)
    try:
        with server:
            yield server
    finally:
        set_settings(backend.settings)


@dataclass
class Provider:
    name: str
    make: Callable[..., Storage]  # (clock=...) -> the store
    fetch: Callable[[str], httpx.Response]  # GET a signed URL as a browser would
    refusals: dict[str, str]  # what the link's server calls a tampered and an expired link

    @property
    def store(self) -> Storage:
        return self.make()

    def refusal(self, r: httpx.Response, what: str) -> None:
        assert r.status_code == 403, r.text
        if self.name == "local":
            assert_problem(r, 403, self.refusals[what])
        else:
            assert f"<Code>{self.refusals[what]}</Code>" in r.text, r.text


@pytest.fixture(params=["local", "s3"])
def provider(request, backend) -> Iterator[Provider]:
    if request.param == "local":
        server = request.getfixturevalue("files_server")

        def fetch(url: str) -> httpx.Response:
            assert url.startswith(PUBLIC_URL + "/")
            return httpx.get(server.url + url.removeprefix(PUBLIC_URL), timeout=10)

        yield Provider("local", lambda clock=time.time: LocalStorage(backend.settings, clock=clock), fetch,
                       {"tampered": "bad-signature", "expired": "link-expired"})
    else:
        settings = request.getfixturevalue("s3_settings")
        yield Provider("s3", lambda clock=time.time: S3Storage(settings, clock=clock),
                       lambda url: httpx.get(url, timeout=10),
                       {"tampered": "SignatureDoesNotMatch", "expired": "AccessDenied"})


def with_query(url: str, **change: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(change)
    return urlunsplit(parts._replace(query="&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())))


def test_roundtrip(provider):
    store, key = provider.store, new_key()
    run(store.put(key, PDF, "application/pdf"))
    assert run(store.get(key)) == PDF
    run(store.put(key, b"replaced", "text/plain"))
    assert run(store.get(key)) == b"replaced"
    run(store.delete(key))
    with pytest.raises(ObjectNotFound):
        run(store.get(key))
    run(store.delete(key))  # deleting again is fine: retried jobs do


def test_files_larger_than_memory_go_in_and_out_in_chunks(provider, tmp_path, request):
    """put_file / stream: what a bulk export uses for files too large to hold (here several chunks;
    S3 gets one PUT with its length, which it requires, and the SHA-256 SigV4 signs)."""
    store, key = provider.store, new_key("exports")
    source = tmp_path / "big.ndjson"
    data = os.urandom(storage_module.CHUNK * 3 + 12_345)
    source.write_bytes(data)
    run(store.put_file(key, source, "application/fhir+ndjson"))

    async def read_all():
        return [chunk async for chunk in store.stream(key)]

    chunks = run(read_all())
    assert b"".join(chunks) == data == run(store.get(key))
    assert len(chunks) >= 4 and max(map(len, chunks)) <= storage_module.CHUNK
    if provider.name == "s3":
        put = [r for r in request.getfixturevalue("s3").received if r.method == "PUT"][-1]
        assert int(put.headers["content-length"]) == len(data) and "transfer-encoding" not in put.headers
        assert put.headers["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()

    async def first_of_missing():
        return await anext(store.stream(new_key()))

    with pytest.raises(ObjectNotFound):
        run(first_of_missing())


def test_missing_key(provider):
    with pytest.raises(ObjectNotFound) as caught:
        run(provider.store.get(new_key()))
    assert caught.value.status == 404 and caught.value.code == "file-not-found"


@pytest.mark.parametrize("key", ["../x", "attachments/../../secret.key", "/etc/passwd", "a//b"])
def test_bad_keys_never_reach_the_store(provider, key):
    store = provider.store
    for call in (lambda: store.put(key, b"x", "text/plain"), lambda: store.get(key), lambda: store.delete(key)):
        with pytest.raises(InvalidStorageKey):
            run(call())
    with pytest.raises(InvalidStorageKey):
        store.signed_url(key, expires_in=60)


def test_signed_url_works_until_it_expires(provider):
    store, key = provider.store, new_key()
    run(store.put(key, PDF, "application/pdf"))
    r = provider.fetch(store.signed_url(key, expires_in=60))
    assert r.status_code == 200 and r.content == PDF
    # Signed an hour ago for a minute: expired now, for the link's server, not the signer's clock.
    old = provider.make(clock=lambda: time.time() - 3600).signed_url(key, expires_in=60)
    provider.refusal(provider.fetch(old), "expired")


def test_tampered_links_are_refused(provider):
    store, key = provider.store, new_key()
    run(store.put(key, PDF, "application/pdf"))
    url = store.signed_url(key, expires_in=60, filename="report.pdf", content_type="application/pdf")
    assert provider.fetch(url).status_code == 200
    sig = "sig" if provider.name == "local" else "X-Amz-Signature"
    name = "filename" if provider.name == "local" else "response-content-disposition"
    kind = "content_type" if provider.name == "local" else "response-content-type"
    query = dict(parse_qsl(urlsplit(url).query))
    for tampered in (with_query(url, **{sig: "0" * 64}),
                     with_query(url, **{name: query[name].replace("report", "invoice")}),
                     with_query(url, **{kind: "text/html"}),
                     url.replace(key, new_key()),
                     with_query(url, **({"expires": str(int(query["expires"]) + 86400)} if provider.name == "local"
                                        else {"X-Amz-Expires": "86400"}))):
        provider.refusal(provider.fetch(tampered), "tampered")


def test_content_disposition_carries_a_non_ascii_filename(provider):
    store, key = provider.store, new_key()
    run(store.put(key, PDF, "application/pdf"))
    r = provider.fetch(store.signed_url(key, expires_in=60, filename=NAME, content_type="application/pdf"))
    assert r.status_code == 200 and r.content == PDF
    assert r.headers["content-type"] == "application/pdf"
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment;") and "filename*=UTF-8''" in disposition
    assert saved_name(disposition) == NAME


# -- the local route, over HTTP ---------------------------------------------------------------


def test_local_download_headers(backend, files_server):
    store, key = LocalStorage(backend.settings), new_key()
    big = os.urandom(600 * 1024)  # several chunks
    run(store.put(key, big, "application/octet-stream"))
    url = store.signed_url(key, expires_in=60, filename="scan.pdf", content_type="application/pdf")
    r = httpx.get(files_server.url + url.removeprefix(PUBLIC_URL), timeout=10)
    assert r.status_code == 200 and r.content == big
    assert r.headers["content-length"] == str(len(big))
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == "attachment; filename=\"scan.pdf\"; filename*=UTF-8''scan.pdf"
    assert r.headers["cache-control"] == "private, no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in r.headers["content-security-policy"]
    # Without a signed name or type: a nameless attachment of unknown type, never sniffed.
    r = httpx.get(files_server.url + store.signed_url(key, expires_in=60).removeprefix(PUBLIC_URL), timeout=10)
    assert r.status_code == 200
    assert (r.headers["content-type"], r.headers["content-disposition"]) == ("application/octet-stream",
                                                                             "attachment")
    # A text type is served as signed: no charset is made up for it.
    url = store.signed_url(key, expires_in=60, content_type="text/plain")
    assert httpx.get(files_server.url + url.removeprefix(PUBLIC_URL)).headers["content-type"] == "text/plain"


def test_local_route_refusals(backend, files_server):
    store, key = LocalStorage(backend.settings), new_key()
    run(store.put(key, b"x", "text/plain"))
    with httpx.Client(base_url=files_server.url, timeout=10) as client:
        assert_problem(client.get(f"/api/v1/files/{key}"), 403, "bad-signature")
        body = assert_problem(client.get(f"/api/v1/files/{key}", params={"expires": "9999999999", "sig": "zz"}),
                              403, "bad-signature")
        assert "open the file again" in body["detail"]
        # Out of the storage folder: refused on the signature, before any path is made.
        for path in ("/api/v1/files/%2e%2e/%2e%2e/secret.key", "/api/v1/files/..%2F..%2Fsecret.key",
                     "/api/v1/files//etc/passwd"):
            r = client.get(path, params={"expires": "9999999999", "sig": "0" * 64})
            assert r.status_code in (403, 404), r.text
            assert r.headers["content-type"] == "application/problem+json"
        expired = LocalStorage(backend.settings, clock=lambda: time.time() - 3600).signed_url(key, expires_in=60)
        body = assert_problem(client.get(expired.removeprefix(PUBLIC_URL)), 403, "link-expired")
        assert "expired at" in body["detail"] and "fresh" in body["detail"]
        link = store.signed_url(key, expires_in=60).removeprefix(PUBLIC_URL)
        head = client.head(link)  # HEAD is GET without the body
        assert (head.status_code, head.headers["content-length"], head.content) == (200, "1", b"")
        run(store.delete(key))
        assert_problem(client.get(link), 404, "file-not-found")
        r = client.get(f"/api/v1/files/{key}", params={"expires": "x" * 5000, "sig": "é" * 500, "filename": "\x01"})
        assert_problem(r, 403, "bad-signature")
        r = client.get(f"/api/v1/files/{key}", params={"expires": "9999999999", "sig": "0" * 64, "filename": "\x00"})
        assert_problem(r, 400, "nul-character")  # refused before anything looks at the link


def test_local_route_is_off_when_files_are_in_s3(backend, files_server):
    store, key = LocalStorage(backend.settings), new_key()
    run(store.put(key, b"x", "text/plain"))
    link = store.signed_url(key, expires_in=60).removeprefix(PUBLIC_URL)
    set_settings(backend.settings.model_copy(update={"storage_provider": "s3"}))
    try:
        assert_problem(httpx.get(files_server.url + link, timeout=10), 404, "file-links-not-served")
    finally:
        set_settings(backend.settings)
    assert httpx.get(files_server.url + link, timeout=10).status_code == 200
