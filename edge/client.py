"""HTTP client of the device API: gallery sync, sighting upload, heartbeat.

Exception tree (every error this module raises on purpose)::

    ClientError (LintelEdgeError)
    +-- ServerUnreachable      connect error, timeout, 5xx, 429: retry later
    +-- AuthRefused            401/403: the token is wrong or revoked; retrying will not help
    +-- Rejected               other 4xx (detail and status attached): fix the request
    +-- GalleryModelMismatch   the server's templates come from another recogniser

``ClientError.retryable`` tells an outbox whether to keep the batch.
The token can be swapped while threads share the client (:meth:`LintelClient.set_token`,
after ``lintel-edge enrol`` wrote a new one); :attr:`LintelClient.refused` says since
when the server refuses it.
The ``transport`` seam lets tests run this client against the server app
in-process.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from edge.face.errors import LintelEdgeError
from edge.wire import (
    API_PREFIX,
    MAX_BATCH,
    DeviceSettings,
    EnrolRequest,
    EnrolResult,
    Gallery,
    Heartbeat,
    HeartbeatAck,
    SightingBatch,
    SightingBatchResult,
    SightingIn,
    SnapshotIn,
)

log = logging.getLogger(__name__)

__all__ = [
    "AuthRefused",
    "ClientError",
    "GalleryModelMismatch",
    "LintelClient",
    "Refusal",
    "Rejected",
    "ServerUnreachable",
    "enrol",
]

_M = TypeVar("_M", bound=BaseModel)


class ClientError(LintelEdgeError):
    """Base of the device API client's errors."""

    retryable = False


class ServerUnreachable(ClientError):
    """No usable answer (network, timeout, 5xx, 429); the same request may succeed later."""

    retryable = True


class AuthRefused(ClientError):
    """The server refused the device token (401/403).

    ``generation``: which of the client's tokens was refused (see
    :attr:`LintelClient.token_generation`), so a caller can tell whether the client
    already holds a newer one.
    """

    def __init__(self, message: str, *, status_code: int, generation: int = 0) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.generation = generation


@dataclass(frozen=True)
class Refusal:
    """The server has refused this client's token since ``since`` (until a request passes)."""

    since: datetime
    status_code: int
    detail: str


class Rejected(ClientError):
    """The server rejected the request (a 4xx other than auth); ``detail`` says why."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"server rejected the request ({status_code}): {detail}")
        self.status_code = status_code
        self.detail = detail


class GalleryModelMismatch(ClientError):
    """The gallery's templates were made by another recognition model than this edge runs."""


class LintelClient:
    """Synchronous client of ``/api/v1/device/*`` for one device token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        model_id: str | None = None,
    ) -> None:
        """``model_id``: the recogniser this edge runs; galleries of other models are refused."""
        self.model_id = model_id
        # Cleared when the server refuses the issue 17 D heartbeat fields (an older one).
        self.server_takes_config = True
        # The token is read per request under this lock (not baked into the pool's
        # headers), so a swap from another thread is never half seen.
        self._token_lock = threading.Lock()
        self._token = token
        self._generation = 0
        self._refused: Refusal | None = None
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + API_PREFIX,
            transport=transport,
            timeout=timeout,
        )

    @property
    def token_generation(self) -> int:
        """Counts token swaps: 0 for the token given at construction."""
        with self._token_lock:
            return self._generation

    @property
    def refused(self) -> Refusal | None:
        """Since when the server refuses the token (None once a request passes)."""
        with self._token_lock:
            return self._refused

    def set_token(self, token: str) -> bool:
        """Use ``token`` from the next request on; False when it is the one in use."""
        with self._token_lock:
            if token == self._token:
                return False
            self._token = token
            self._generation += 1
            return True

    def __enter__(self) -> LintelClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def fetch_gallery(self, etag: str | None = None) -> Gallery | None:
        """The site's gallery, or None when ``etag`` is still current (304).

        Pass the previous gallery's ``etag`` property (kept with the cached gallery).
        """
        headers = {"If-None-Match": etag} if etag else {}
        response = self._request("GET", "/device/gallery", headers=headers)
        if response.status_code == 304:
            return None
        gallery = self._parse(response, Gallery)
        self._check_model(gallery)
        return gallery

    def upload_sightings(self, sightings: list[SightingIn]) -> SightingBatchResult:
        """Upload one batch; re-sending the same sightings creates nothing twice.

        An empty list sends nothing; more than ``MAX_BATCH`` is a caller bug
        (``ValueError``): split the outbox into batches first.
        """
        if not sightings:
            return SightingBatchResult(created=0, duplicates=0)
        if len(sightings) > MAX_BATCH:
            raise ValueError(f"{len(sightings)} sightings in one batch; at most {MAX_BATCH}")
        batch = SightingBatch(sightings=sightings)
        response = self._request(
            "POST",
            "/device/sightings",
            content=batch.model_dump_json(exclude_none=True).encode(),
            headers={"Content-Type": "application/json"},
        )
        return self._parse(response, SightingBatchResult)

    def heartbeat(self, heartbeat: Heartbeat) -> HeartbeatAck:
        """Report liveness and stats; the ack carries the current gallery (and settings)
        version.

        Optional fields that are unset are not sent; a server older than the
        settings sync refuses the new ones (422), so they are dropped from then on.
        """
        if not self.server_takes_config:
            heartbeat = _without_config(heartbeat)
        try:
            response = self._request(
                "POST",
                "/device/heartbeat",
                content=heartbeat.model_dump_json(exclude_none=True).encode(),
                headers={"Content-Type": "application/json"},
            )
        except Rejected as exc:
            if exc.status_code != 422 or not self.server_takes_config:
                raise
            log.warning("the server does not take camera settings; heartbeat without them")
            self.server_takes_config = False
            return self.heartbeat(heartbeat)
        return self._parse(response, HeartbeatAck)

    def fetch_config(self, etag: str | None = None) -> DeviceSettings | None:
        """The device's camera settings, or None when ``etag`` is still current (304)."""
        headers = {"If-None-Match": etag} if etag else {}
        response = self._request("GET", "/device/config", headers=headers)
        if response.status_code == 304:
            return None
        return self._parse(response, DeviceSettings)

    def upload_snapshot(self, snapshot: SnapshotIn) -> None:
        """Send a camera's low-resolution snapshot (the server refuses it, 409, when the
        site has not opted in)."""
        self._request(
            "POST",
            "/device/snapshot",
            content=snapshot.model_dump_json().encode(),
            headers={"Content-Type": "application/json"},
        )

    def _check_model(self, gallery: Gallery) -> None:
        wanted = self.model_id or gallery.model_id
        if gallery.model_id != wanted:
            raise GalleryModelMismatch(
                f"gallery of site {gallery.site_id} holds {gallery.model_id!r} templates, "
                f"this edge runs {wanted!r}; re-enrol the site or change the edge's model"
            )
        for template in gallery.templates:
            if template.model_id is not None and template.model_id != wanted:
                raise GalleryModelMismatch(
                    f"template {template.template_id} was made by {template.model_id!r}, "
                    f"this edge runs {wanted!r}"
                )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._token_lock:
            token, generation = self._token, self._generation
        kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(f"{method} {path}: timed out ({exc})") from exc
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"{method} {path}: {exc}") from exc
        status = response.status_code
        if status < 400 or status == 304:
            self._note_accepted(generation)
            return response
        detail = _detail(response)
        if status in (401, 403):
            with self._token_lock:
                if self._refused is None and generation == self._generation:
                    self._refused = Refusal(datetime.now(UTC), status, detail)
            raise AuthRefused(
                f"{method} {path}: token refused ({status}): {detail}",
                status_code=status,
                generation=generation,
            )
        if status >= 500 or status in (408, 429):
            raise ServerUnreachable(f"{method} {path}: server answered {status}: {detail}")
        raise Rejected(status, detail)

    def _note_accepted(self, generation: int) -> None:
        # Only the token in use clears a refusal: an answer to a request still
        # in flight with an older token says nothing about the current one.
        if self._refused is not None:
            with self._token_lock:
                if generation == self._generation:
                    self._refused = None

    @staticmethod
    def _parse(response: httpx.Response, model: type[_M]) -> _M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            # A 2xx we cannot read: a proxy page or a server of another version.
            raise Rejected(response.status_code, f"unexpected response body: {exc}") from exc


def _without_config(heartbeat: Heartbeat) -> Heartbeat:
    """The heartbeat as a server before the settings sync understands it."""
    cams = {
        name: cam.model_copy(update={"analysed_fps": None, "enabled": None, "last_track_at": None})
        for name, cam in heartbeat.cameras.items()
    }
    return heartbeat.model_copy(
        update={
            "config_version": None,
            "config_pinned": None,
            "gallery_version": None,
            "cameras": cams,
        }
    )


def enrol(
    base_url: str,
    code: str,
    *,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> EnrolResult:
    """Trade a one-time enrolment code for the device's token (no token needed)."""
    with httpx.Client(
        base_url=base_url.rstrip("/") + API_PREFIX, timeout=timeout, transport=transport
    ) as http:
        try:
            response = http.post(
                "/device/enrol",
                content=EnrolRequest(code=code.strip()).model_dump_json().encode(),
                headers={"Content-Type": "application/json"},
            )
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"POST /device/enrol: {exc}") from exc
        if response.status_code >= 400:
            detail = _detail(response)
            if response.status_code in (429, 500, 502, 503, 504):
                raise ServerUnreachable(f"enrolment refused ({response.status_code}): {detail}")
            raise Rejected(response.status_code, detail)
        return LintelClient._parse(response, EnrolResult)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:1000]
    return str(body)[:300]
