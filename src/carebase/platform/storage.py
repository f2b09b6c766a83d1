"""File storage: attachments, prescription PDFs, lab files. One small interface, two providers.

``storage(settings)`` picks by ``CAREBASE_STORAGE_PROVIDER``:

* ``local`` (default): files under ``CAREBASE_STORAGE_PATH`` (default ``$CAREBASE_HOME/storage``).
  Its links point at this server, ``/api/v1/files/<key>?expires=…&sig=…``, signed with a key
  derived from the master secret; the route (``carebase.streams.files``) checks them.
* ``s3``: any S3-compatible store (AWS S3, MinIO, Ceph RGW). Requests are signed with AWS
  Signature Version 4, written here over httpx: three calls and a presigned GET do not justify
  boto3's weight. Links are S3 presigned URLs: the bytes never pass through Carebase.

Keys are chosen by the code, never by users (``attachments/<tenant>/<uuid>``): ``/``-separated
segments of letters, digits, ``.``, ``_`` and ``-``, each starting with a letter or digit. That
keeps a key the same file on disk and in a bucket, and makes ``..``, absolute paths and hidden
files unrepresentable rather than filtered.

A link is the permission: whoever holds it can download until it expires. Hand out short ones
(minutes), only after the caller was authorized for the record the file belongs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

import httpx

from carebase.platform import crypto
from carebase.platform.errors import DomainError, Forbidden, NotFound, ServiceUnavailable, ValidationFailed
from carebase.settings import Settings, public_base_url

# S3 refuses presigned URLs valid longer than 7 days; local links keep the same bound so code that
# works on one provider works on the other.
MAX_LINK_SECONDS = 7 * 24 * 3600
MAX_KEY_BYTES = 1024  # S3's limit on object keys
CHUNK = 1 << 20  # what put_file and stream hold in memory at a time
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_MEDIA_TYPE = re.compile(rf'{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|"[^"\\\x00-\x1f\x7f]*"))*')


# -- errors ------------------------------------------------------------------------------------


class InvalidStorageKey(ValidationFailed, ValueError):
    code = "bad-storage-key"


class ObjectNotFound(NotFound):
    code, title = "file-not-found", "File not found"


class StorageError(DomainError):
    """The store refused the request in a way a retry will not change (credentials, bucket)."""

    code, status, title = "storage-error", 502, "File storage refused the request"


class StorageUnavailable(ServiceUnavailable):
    """Transient: the store did not answer in time, or answered 5xx / slow down. Retry later."""

    code, title = "storage-unavailable", "File storage is unavailable"


class BadSignature(Forbidden):
    code, title = "bad-signature", "Invalid download link"


class LinkExpired(Forbidden):
    code, title = "link-expired", "Download link expired"


# -- the interface -----------------------------------------------------------------------------


class Storage(Protocol):
    provider: str

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing what was there (readers see old or new, whole)."""

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Like ``put``, with the bytes of the file at ``path``, read in chunks: for files too large
        to hold in memory (a bulk export)."""

    async def get(self, key: str) -> bytes:
        """The bytes under ``key``; ``ObjectNotFound`` if there are none."""

    def stream(self, key: str) -> AsyncIterator[bytes]:
        """The bytes under ``key`` in chunks of at most ``CHUNK`` bytes; ``ObjectNotFound`` (before
        the first chunk) if there are none."""

    async def delete(self, key: str) -> None:
        """Remove ``key``; deleting what is not there is not an error (so retries are safe)."""

    def signed_url(self, key: str, *, expires_in: int, filename: str | None = None,
                   content_type: str | None = None) -> str:
        """A URL anyone holding it can GET for ``expires_in`` seconds, served as an attachment
        named ``filename`` (when given) with ``content_type`` (when given)."""


def storage(settings: Settings) -> Storage:
    provider = settings.storage_provider
    if provider == "local":
        return LocalStorage(settings)
    if provider == "s3":
        return S3Storage(settings)
    raise ValueError(f"CAREBASE_STORAGE_PROVIDER={provider!r}: not one of ['local', 's3']")


# -- shared rules ------------------------------------------------------------------------------


def check_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidStorageKey(f"A storage key is 1 to {MAX_KEY_BYTES} bytes.")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidStorageKey(f"Storage key {key[:100]!r} is not allowed: use '/'-separated parts of letters, "
                                    "digits, '.', '_' and '-', each starting with a letter or digit.")
    return key


def check_content_type(content_type: str) -> str:
    # It ends up in a response header: nothing but a media type may get through.
    if not isinstance(content_type, str) or len(content_type) > 255 or not _MEDIA_TYPE.fullmatch(content_type):
        raise ValidationFailed(f"{str(content_type)[:100]!r} is not a media type like 'application/pdf'.",
                               code="bad-content-type")
    return content_type


def check_expires_in(expires_in: int) -> int:
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or not 1 <= expires_in <= MAX_LINK_SECONDS:
        raise ValueError(f"expires_in must be 1 to {MAX_LINK_SECONDS} seconds, not {expires_in!r}")
    return expires_in


def clean_filename(filename: str) -> str:
    """The name a download is saved as: no path, no control characters, at most 255 characters."""
    name = "".join("_" if ch in "/\\" else ch for ch in filename if ch.isprintable())
    return name.strip().strip(".")[:255] or "download"


def content_disposition(filename: str) -> str:
    """``attachment`` with the name twice: ``filename*`` (RFC 8187, UTF-8) for every current
    browser, and an ASCII ``filename`` for the rest, since a raw non-ASCII header is mangled."""
    name = clean_filename(filename)
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\%' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _public_base(settings: Settings) -> str:
    return public_base_url(settings)


# -- local disk --------------------------------------------------------------------------------


class LocalStorage:
    """Files on this machine's disk. Writes are atomic and durable: a temporary file in the target
    folder, fsync, rename over the key, fsync of the folder, so a crash leaves the old file or the
    new one, never a torn one. Files and folders are private to the service's user (0600/0700).

    It does not keep the content type: a link serves the type it was signed with (else
    ``application/octet-stream``), so callers keep the type with their own record."""

    provider = "local"
    LINK_PATH = "/api/v1/files/"

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time):
        self.root = Path(settings.storage_path or settings.home / "storage")
        self.base_url = _public_base(settings)
        # Its own key: a leaked link key must not forge tokens, and the reverse.
        self._link_key = crypto.keyring_for(settings.master_secret).derive("file-links")
        self._clock = clock

    def path_for(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key).split("/"))
        # Unreachable with check_key's alphabet; kept so a future loosening cannot escape the root.
        # Lexical, not resolve(): an operator may well symlink a folder of it to a bigger disk.
        if not Path(os.path.abspath(path)).is_relative_to(os.path.abspath(self.root)):
            raise InvalidStorageKey(f"Storage key {key[:100]!r} leaves the storage folder.")
        return path

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        check_content_type(content_type)
        path = self.path_for(key)
        await asyncio.to_thread(self._write, key, path, bytes(data))

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        check_content_type(content_type)
        target = self.path_for(key)
        await asyncio.to_thread(self._write, key, target, Path(path))

    async def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"There is no file {key!r}.") from None

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        try:
            # Opened before the first chunk: a file replaced or deleted meanwhile still reads whole.
            fh = await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"There is no file {key!r}.") from None
        try:
            async for chunk in _chunks(fh):
                yield chunk
        finally:
            fh.close()

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        await asyncio.to_thread(self._unlink, path)

    def signed_url(self, key: str, *, expires_in: int, filename: str | None = None,
                   content_type: str | None = None) -> str:
        check_key(key)
        expires = str(int(self._clock()) + check_expires_in(expires_in))
        filename = clean_filename(filename) if filename else None
        content_type = check_content_type(content_type) if content_type else None
        params = [("expires", expires)]
        if filename:
            params.append(("filename", filename))
        if content_type:
            params.append(("content_type", content_type))
        params.append(("sig", self._signature(key, expires, filename, content_type)))
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
        return f"{self.base_url}{self.LINK_PATH}{quote(key, safe='/')}?{query}"

    def open_link(self, key: str, *, expires: str | None, sig: str | None, filename: str | None = None,
                  content_type: str | None = None) -> tuple[BinaryIO, int]:
        """Check a link's signature, then its expiry, and open the file it names: (file, size).

        The signature first: only a link this server made gets told it expired, and nothing about
        a forged one touches the disk."""
        if not expires or not sig:
            raise BadSignature("This download link is incomplete: open the file again from where you found it.")
        expected = self._signature(key, expires, filename, content_type).encode()
        # Bytes: compare_digest refuses non-ASCII str, and the query is whatever was sent.
        if not hmac.compare_digest(expected, sig.encode("utf-8", "surrogateescape")):
            raise BadSignature("This download link was changed or is not from this server: open the file again "
                               "from where you found it.")
        try:
            expires_at = int(expires)
        except ValueError:  # signed by us, so never; but the check must not be able to 500
            raise BadSignature("This download link is damaged: open the file again from where you found it.") \
                from None
        if expires_at < self._clock():
            when = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            raise LinkExpired(f"This download link expired at {when}. Links are short-lived: open the file again "
                              "from where you found it to get a fresh one.")
        path = self.path_for(key)
        try:
            # Opened before the response starts: a file deleted while it streams is still whole.
            fh = open(path, "rb")  # noqa: SIM115 - the caller streams it and closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound("This file no longer exists: it may have been deleted.") from None
        return fh, os.fstat(fh.fileno()).st_size

    def _signature(self, key: str, expires: str, filename: str | None, content_type: str | None) -> str:
        # JSON keeps the fields apart whatever they contain: no "a|b" + "c" == "a" + "b|c".
        message = json.dumps([key, expires, filename, content_type], separators=(",", ":"))
        return hmac.new(self._link_key, message.encode(), hashlib.sha256).hexdigest()

    def _write(self, key: str, path: Path, data: bytes | Path) -> None:
        """``data``: the bytes, or a file to copy them from."""
        created = self._make_folders(key, path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # a dot name: never a key
        try:
            with os.fdopen(fd, "wb") as fh:
                if isinstance(data, Path):
                    with open(data, "rb") as src:
                        shutil.copyfileobj(src, fh, CHUNK)
                else:
                    fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.replace(tmp, path)
            except IsADirectoryError:
                raise InvalidStorageKey(f"Storage key {key!r} is a folder of other files.") from None
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        # The rename is durable only once its folder is synced, and a new folder once its parent is.
        _fsync_dir(path.parent)
        for folder in created:
            _fsync_dir(folder.parent)

    def _make_folders(self, key: str, folder: Path) -> list[Path]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        created, current = [], self.root
        for part in folder.relative_to(self.root).parts:
            current = current / part
            try:
                current.mkdir(mode=0o700)
                created.append(current)
            except FileExistsError:
                if not current.is_dir():
                    raise InvalidStorageKey(f"Storage key {key!r} goes through {part!r}, which is a file.") from None
            except NotADirectoryError:
                raise InvalidStorageKey(f"Storage key {key!r} goes through a file.") from None
        return created

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            os.unlink(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        _fsync_dir(path.parent)


async def _chunks(fh: BinaryIO) -> AsyncIterator[bytes]:
    """An open file's bytes, ``CHUNK`` at a time, read off the event loop."""
    while chunk := await asyncio.to_thread(fh.read, CHUNK):
        yield chunk


def _file_sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- AWS Signature Version 4 -------------------------------------------------------------------

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """SigV4's UriEncode: every byte but A-Z a-z 0-9 - _ . ~ as %XY (upper-case hex, UTF-8)."""
    return quote(value, safe="-_.~/" if keep_slash else "-_.~")


def amz_date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y%m%dT%H%M%SZ")


class SigV4:
    """Signs requests the way AWS services check them (docs: "Signature Version 4 signing
    process"; for S3 "Authenticating Requests (AWS Signature Version 4)"). ``path`` is the decoded
    path: it is URI-encoded once, keeping ``/``, which is S3's rule (other services encode twice;
    the two agree on every path without ``%``)."""

    def __init__(self, access_key_id: str, secret_access_key: str, region: str, service: str = "s3"):
        self.access_key_id = access_key_id
        self._secret = secret_access_key
        self.region = region
        self.service = service

    def scope(self, date: str) -> str:
        return f"{date[:8]}/{self.region}/{self.service}/aws4_request"

    def signing_key(self, date: str) -> bytes:
        key = ("AWS4" + self._secret).encode()
        for part in (date[:8], self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key

    @staticmethod
    def canonical_request(method: str, path: str, query: Iterable[tuple[str, str]], headers: dict[str, str],
                          payload_hash: str) -> tuple[str, str]:
        """(the canonical request, its signed-headers list). Every header given is signed."""
        canonical_query = "&".join(f"{k}={v}" for k, v in sorted(
            (uri_encode(k), uri_encode(v)) for k, v in query))
        lowered = sorted((name.lower(), " ".join(str(value).split())) for name, value in headers.items())
        canonical_headers = "".join(f"{name}:{value}\n" for name, value in lowered)
        signed_headers = ";".join(name for name, _ in lowered)
        return "\n".join([method, uri_encode(path, keep_slash=True) or "/", canonical_query, canonical_headers,
                          signed_headers, payload_hash]), signed_headers

    def signature(self, method: str, path: str, query: Iterable[tuple[str, str]], headers: dict[str, str],
                  payload_hash: str, date: str) -> tuple[str, str]:
        """(signature hex, signed headers) for a request made at ``date`` (YYYYMMDDTHHMMSSZ)."""
        creq, signed_headers = self.canonical_request(method, path, query, headers, payload_hash)
        to_sign = "\n".join([ALGORITHM, date, self.scope(date), hashlib.sha256(creq.encode()).hexdigest()])
        return hmac.new(self.signing_key(date), to_sign.encode(), hashlib.sha256).hexdigest(), signed_headers

    def authorization(self, method: str, path: str, query: Iterable[tuple[str, str]], headers: dict[str, str],
                      payload_hash: str, date: str) -> str:
        """The Authorization header; ``headers`` must include host and x-amz-date."""
        signature, signed_headers = self.signature(method, path, query, headers, payload_hash, date)
        return (f"{ALGORITHM} Credential={self.access_key_id}/{self.scope(date)}, SignedHeaders={signed_headers}, "
                f"Signature={signature}")

    def presign(self, method: str, path: str, host: str, date: str, expires_in: int,
                extra: Iterable[tuple[str, str]] = ()) -> str:
        """The query string of a presigned request (host the only signed header, payload unsigned),
        in the order AWS's own examples print it, ``X-Amz-Signature`` last."""
        params = [("X-Amz-Algorithm", ALGORITHM), ("X-Amz-Credential", f"{self.access_key_id}/{self.scope(date)}"),
                  ("X-Amz-Date", date), ("X-Amz-Expires", str(expires_in)), ("X-Amz-SignedHeaders", "host"),
                  *extra]
        signature, _ = self.signature(method, path, params, {"host": host}, UNSIGNED_PAYLOAD, date)
        params.append(("X-Amz-Signature", signature))
        return "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in params)


# -- S3-compatible object storage --------------------------------------------------------------

# S3 error codes worth a retry even when the HTTP status alone would say otherwise.
_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "OperationAborted"}


def _s3_error(body: str) -> tuple[str, str]:
    # A regex, not an XML parser: the answer may be a proxy's HTML, and only two fields matter.
    code = re.search(r"<Code>([^<]{1,100})</Code>", body)
    message = re.search(r"<Message>([^<]{1,300})</Message>", body)
    return (code.group(1) if code else ""), (message.group(1) if message else "")


class S3Storage:
    """Objects in one bucket of an S3-compatible store. Path-style addressing
    (``endpoint/bucket/key``) by default, which MinIO and Ceph expect; virtual-hosted
    (``bucket.endpoint/key``) with ``CAREBASE_S3_PATH_STYLE=false``, which AWS prefers."""

    provider = "s3"

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time):
        missing = [name for name in ("s3_bucket", "s3_access_key_id", "s3_secret_access_key")
                   if not getattr(settings, name)]
        if missing:
            raise ValueError("S3 storage is not configured: set " + ", ".join(f"CAREBASE_{n.upper()}" for n in missing))
        self.bucket: str = settings.s3_bucket  # type: ignore[assignment]
        endpoint = httpx.URL(settings.s3_endpoint_url or f"https://s3.{settings.s3_region}.amazonaws.com")
        if endpoint.scheme not in ("http", "https") or not endpoint.host:
            raise ValueError(f"CAREBASE_S3_ENDPOINT_URL={settings.s3_endpoint_url!r} is not an http(s) URL")
        prefix = endpoint.path.rstrip("/")
        if settings.s3_path_style:
            self._origin, self._prefix = f"{endpoint.scheme}://{endpoint.netloc.decode()}", f"{prefix}/{self.bucket}"
        else:
            self._origin, self._prefix = f"{endpoint.scheme}://{self.bucket}.{endpoint.netloc.decode()}", prefix
        self._host = httpx.URL(self._origin).netloc.decode()  # what httpx sends as Host (no default port)
        secret = settings.s3_secret_access_key.get_secret_value()  # type: ignore[union-attr]
        self.signer = SigV4(settings.s3_access_key_id, secret, settings.s3_region, "s3")  # type: ignore[arg-type]
        self.timeout = settings.storage_timeout_seconds
        self._clock = clock

    def _path(self, key: str) -> str:
        return f"{self._prefix}/{check_key(key)}"

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        check_content_type(content_type)
        await self._call("PUT", key, bytes(data), content_type)

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        check_content_type(content_type)
        # SigV4 signs the payload's SHA-256, so the file is read twice: once to hash, once to send.
        digest, size = await asyncio.to_thread(_file_sha256, Path(path))

        async def chunks() -> AsyncIterator[bytes]:
            with open(path, "rb") as fh:
                async for chunk in _chunks(fh):
                    yield chunk

        # One PUT with its length (S3 refuses a chunked body without aws-chunked signing); S3 takes
        # up to 5 GiB that way.
        await self._call("PUT", key, chunks(), content_type, payload=(digest, size))

    async def get(self, key: str) -> bytes:
        return (await self._call("GET", key)).content

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        async with self._streamed("GET", key) as response:
            async for chunk in response.aiter_bytes(CHUNK):
                yield chunk

    async def delete(self, key: str) -> None:
        await self._call("DELETE", key)  # S3 answers 204 whether or not the key existed

    def signed_url(self, key: str, *, expires_in: int, filename: str | None = None,
                   content_type: str | None = None) -> str:
        path = self._path(key)
        extra = []
        # S3 answers with these instead of what was stored: the download's name and type.
        if filename:
            extra.append(("response-content-disposition", content_disposition(filename)))
        if content_type:
            extra.append(("response-content-type", check_content_type(content_type)))
        query = self.signer.presign("GET", path, self._host, amz_date(self._clock()), check_expires_in(expires_in),
                                    extra)
        return f"{self._origin}{uri_encode(path, keep_slash=True)}?{query}"

    async def _call(self, method: str, key: str, body: bytes | AsyncIterator[bytes] = b"",
                    content_type: str | None = None, payload: tuple[str, int] | None = None) -> httpx.Response:
        """One request; ``payload`` (SHA-256 hex, length) when ``body`` is a stream of chunks."""
        async with self._streamed(method, key, body, content_type, payload) as response:
            await response.aread()
            return response

    @contextlib.asynccontextmanager
    async def _streamed(self, method: str, key: str, body: bytes | AsyncIterator[bytes] = b"",
                        content_type: str | None = None,
                        payload: tuple[str, int] | None = None) -> AsyncIterator[httpx.Response]:
        path = self._path(key)
        date = amz_date(self._clock())
        payload_hash = payload[0] if payload else hashlib.sha256(body).hexdigest()  # type: ignore[arg-type]
        headers = {"host": self._host, "x-amz-date": date, "x-amz-content-sha256": payload_hash}
        if content_type:
            headers["content-type"] = content_type
        if payload:
            headers["content-length"] = str(payload[1])
        headers["authorization"] = self.signer.authorization(method, path, (), headers, payload_hash, date)
        url = f"{self._origin}{uri_encode(path, keep_slash=True)}"
        try:
            # A client per call: one store may serve several event loops (the server's, a job's,
            # a test's asyncio.run), and a pooled client is bound to the loop that opened it.
            async with httpx.AsyncClient(timeout=self.timeout) as client, \
                    client.stream(method, url, headers=headers, content=body if method == "PUT" else None) as response:
                if response.status_code >= 300:
                    await response.aread()
                    raise self._failure(response, key)
                yield response
        except httpx.TimeoutException as exc:
            raise StorageUnavailable(f"The file store did not answer within {self.timeout:g} s; try again.") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise StorageError("CAREBASE_S3_ENDPOINT_URL is not a valid http(s) URL.") from exc
        except httpx.HTTPError as exc:  # refused, reset, DNS, TLS: worth another try later
            raise StorageUnavailable(f"The file store could not be reached ({type(exc).__name__}); try again.") \
                from exc

    def _failure(self, response: httpx.Response, key: str) -> DomainError:
        status = response.status_code
        code, message = _s3_error(response.text)
        if status == 404 and code in ("NoSuchKey", ""):
            return ObjectNotFound(f"There is no file {key!r}.")
        what = f"The file store answered HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message
                                                                                          else "")
        if status == 429 or status >= 500 or code in _TRANSIENT_CODES:
            return StorageUnavailable(f"{what}. Try again.")
        if code == "NoSuchBucket":
            return StorageError(f"{what}. Check CAREBASE_S3_BUCKET and CAREBASE_S3_ENDPOINT_URL.")
        if status in (401, 403):
            return StorageError(f"{what}. Check CAREBASE_S3_ACCESS_KEY_ID, CAREBASE_S3_SECRET_ACCESS_KEY and "
                                "CAREBASE_S3_REGION, and that the key may use this bucket.")
        return StorageError(f"{what}.")
