"""GET /api/v1/files/{key}: downloads through the signed links of local file storage.

Public: a link carries no Carebase token (it is opened by a browser, a mail client, a PDF viewer),
so the route takes no principal. Its signature is the authorization: the service that minted the
link checked who may see the file, and the link says which file, as what, until when
(``?expires=<unix>&filename=…&content_type=…&sig=<hex HMAC-SHA256>``). With S3 storage the links
point at the bucket, and this route answers 404.

A plain Starlette route, like the providers' webhooks, not an API operation: clients never build
these URLs from a schema, they follow the ``url`` the API gave them, and the tenant walk's idea of
a resource (an id some principal may or may not read) does not apply to a capability URL. Its
refusals are still problem+json: 403 ``bad-signature`` / ``link-expired``, 404 ``file-not-found``.

Here, next to the event stream, because both send a response body that outlives the handler and
neither touches a domain's tables; the rules (signature, expiry, paths) live in platform/storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import BinaryIO

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from carebase.platform import storage
from carebase.platform.errors import NotFound
from carebase.settings import get_settings

router = APIRouter(prefix="/api/v1", tags=["files"])

CHUNK = 256 * 1024


async def _chunks(fh: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await anyio.to_thread.run_sync(fh.read, CHUNK):
            yield chunk
    finally:
        fh.close()


async def download(request: Request) -> StreamingResponse:
    settings = get_settings()
    if settings.storage_provider != "local":
        raise NotFound("This server does not serve files itself: its file links point at its object storage.",
                       code="file-links-not-served")
    q = request.query_params
    filename, content_type = q.get("filename"), q.get("content_type")
    fh, size = storage.LocalStorage(settings).open_link(request.path_params["key"], expires=q.get("expires"),
                                                        sig=q.get("sig"), filename=filename,
                                                        content_type=content_type)
    headers = {
        # Set as signed: media_type would append "; charset=utf-8" to text types, a claim about
        # bytes nobody checked.
        "Content-Type": content_type or "application/octet-stream",
        "Content-Length": str(size),
        "Content-Disposition": storage.content_disposition(filename) if filename else "attachment",
        # The link is a secret with a deadline: no shared cache may keep the file past either.
        "Cache-Control": "private, no-store",
        # Attachment, not sniffed, sandboxed: an uploaded HTML or SVG never runs as this origin.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    return StreamingResponse(_chunks(fh), headers=headers)


# add_route does not apply the router's prefix (only API operations get it).
router.add_route(router.prefix + "/files/{key:path}", download, methods=["GET"], include_in_schema=False)
