"""HTTP for acquisition: one httpx client per provider, authorisation, resumable verified
downloads.

* :class:`HttpSettings`: every timeout and retry count (frozen; each has a default);
* :class:`ProviderSession`: an ``httpx.Client`` with those timeouts plus the provider's
  authorisation: Planetary Computer SAS tokens appended to asset URLs (one token per
  collection, cached until shortly before it expires), CDSE OAuth2 bearer tokens (password
  grant, refreshed with the refresh token before expiry; on a 401 refreshed once, then a
  clear :class:`~agriseries.core.errors.AuthenticationError`), GEODES API key header;
* :meth:`ProviderSession.download`: a file to ``dest`` through ``dest.part``, resumed with
  HTTP ``Range`` after a drop or a stall, retried with backoff by tenacity (honouring
  ``Retry-After``), never appending an HTML/XML error page, verified (size, multihash, open)
  before it is renamed to ``dest``.

File bodies go through urllib3 (the transport of requests and pystac-client), read by 1 MiB
``read1`` calls straight from the socket and hashed as they are written, so a file is read
once; httpx's 64 KiB reads and per-chunk parsing made whole-file downloads 2 to 2.5 times
slower than curl on loopback (docs/benchmarks.md, "Acquisition"). API calls (tokens, SAS,
small documents) stay on httpx.

Nothing here logs or prints a credential or a signed URL's query string.
"""

from __future__ import annotations

import email.utils
import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from ..core.errors import optional_import

httpx = optional_import("httpx", "acquire")
urllib3 = optional_import("urllib3", "acquire")
optional_import("tenacity", "acquire")
from tenacity import (  # noqa: E402
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ..core.errors import AuthenticationError, DownloadError, VerificationError
from .providers import Credentials, Provider, Token
from .verify import (
    check_checksum,
    check_opens,
    find_error_page,
    looks_like_error_page,
    new_hasher,
)

__all__ = ["HttpSettings", "ProviderSession", "Transient", "redact"]


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts and retries of every acquisition request."""

    connect_timeout_s: float = 10.0
    """Time to open a connection."""
    read_timeout_s: float = 60.0
    """Longest silence of a socket before the request is abandoned (a stalled server)."""
    attempts: int = 6
    """Tries of one request (or one download, resumed each time) before it fails."""
    backoff_s: float = 1.0
    """First wait between two tries; doubles each time (with jitter)."""
    backoff_max_s: float = 60.0
    """Longest wait between two tries, also the cap on a server's ``Retry-After``."""
    token_margin_s: float = 60.0
    """A token is renewed when it expires within this many seconds."""
    chunk_bytes: int = 1 << 20
    """Most bytes read from the socket at a time (a read returns what has arrived)."""

    def timeout(self) -> httpx.Timeout:
        """The httpx timeout object."""
        return httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)

    def urllib3_timeout(self) -> urllib3.Timeout:
        """The same timeouts for urllib3 (file bodies)."""
        return urllib3.Timeout(connect=self.connect_timeout_s, read=self.read_timeout_s)


class Transient(DownloadError):
    """A failure worth another try (5xx, 429, drop, stall, error page); carries the wait the
    server asked for."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _ErrorPage(Transient):
    """An HTML/XML error page where the file's bytes were expected."""


def redact(url: str) -> str:
    """The URL without its query string (SAS signatures, tokens)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, p.path, "", ""))


def _retry_after(resp: httpx.Response) -> float | None:
    return _parse_retry_after(resp.headers.get("Retry-After"))


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


class _Wait:
    """tenacity wait: the server's Retry-After when it gave one, else exponential backoff."""

    def __init__(self, settings: HttpSettings) -> None:
        self.cap = settings.backoff_max_s
        self.exp = wait_exponential(multiplier=settings.backoff_s, max=settings.backoff_max_s)

    def __call__(self, state) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return min(exc.retry_after, self.cap)
        return self.exp(state)


_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}

#: Bytes at the start of a response body checked for an error page while it streams.
_BODY_START = 1 << 16
_USER_AGENT = "agriseries-acquire"


class _Pools:
    """urllib3 connection pools for file bodies: direct, or through the proxy the environment
    names for the URL (``http_proxy``, ``https_proxy``, ``no_proxy``, as httpx and curl read
    them). Redirects are followed (at most 10; ``Authorization`` is dropped when one leaves
    the host); urllib3 itself never retries (tenacity does)."""

    def __init__(self, settings: HttpSettings) -> None:
        self.kw = dict(timeout=settings.urllib3_timeout(), retries=urllib3.Retry(
            total=None, connect=0, read=0, status=0, other=0, redirect=10,
            raise_on_redirect=True, raise_on_status=False), maxsize=4)
        self.direct = urllib3.PoolManager(**self.kw)
        self.proxied: dict[str, urllib3.ProxyManager] = {}
        self.proxies = {k.lower(): v for k, v in urllib.request.getproxies().items()}

    def for_url(self, url: str):
        p = urlsplit(url)
        proxy = self.proxies.get(p.scheme)
        if not proxy or urllib.request.proxy_bypass(p.hostname or ""):
            return self.direct
        if proxy not in self.proxied:
            self.proxied[proxy] = urllib3.ProxyManager(proxy, **self.kw)
        return self.proxied[proxy]

    def clear(self) -> None:
        self.direct.clear()
        for m in self.proxied.values():
            m.clear()


class ProviderSession:
    """An httpx client for one provider, with its authorisation (see the module docstring)."""

    def __init__(self, provider: Provider, settings: HttpSettings | None = None,
                 on_request: Callable[[str], None] | None = None) -> None:
        self.provider = provider
        self.settings = settings or HttpSettings()
        self.credentials = Credentials(provider)
        self._client: httpx.Client | None = None
        self._pools: _Pools | None = None
        self._pool = None
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._bearer: Token | None = None
        self._sas: dict[str, Token] = {}
        self.on_request = on_request
        self.requests = 0

    @property
    def client(self) -> httpx.Client:
        """The httpx client of API calls, made at the first (its TLS set-up costs about
        20 ms of CPU; a session that only downloads files never needs it)."""
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.settings.timeout(),
                                            follow_redirects=True,
                                            headers={"User-Agent": _USER_AGENT})
            return self._client

    def _writer(self):
        """The session's writer thread (:class:`_Sink`)."""
        with self._client_lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(1, thread_name_prefix="agriseries-download")
            return self._pool

    def close(self) -> None:
        """Close the connections (and the writer thread)."""
        if self._client is not None:
            self._client.close()
        if self._pools is not None:
            self._pools.clear()
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> ProviderSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _retrying(self, extra=()) -> Retrying:
        s = self.settings
        return Retrying(stop=stop_after_attempt(s.attempts), wait=_Wait(s), reraise=True,
                        retry=retry_if_exception_type((Transient, *extra)))

    # ------------------------------------------------------------------ authorisation
    def headers(self, force_new: bool = False) -> dict[str, str]:
        """Authorisation headers for a request to the provider (none when public)."""
        p = self.provider
        if p.auth == "oauth2":
            return {"Authorization": f"Bearer {self._oauth_token(force_new)}"}
        if p.auth == "apikey":
            return {p.apikey_header: self.credentials.values()[0]}
        if p.auth == "sas":
            key = self.credentials.optional()
            return {"Ocp-Apim-Subscription-Key": key[0]} if key else {}
        return {}

    def _token_request(self, data: dict[str, str]) -> Token:
        url = self.provider.token_url
        if not url:
            raise AuthenticationError(f"provider {self.provider.name}: no token endpoint")

        def once() -> Token:
            self._count(url)
            try:
                resp = self.client.post(url, data=data)
            except httpx.TransportError as e:
                raise Transient(f"token endpoint {redact(url)}: {type(e).__name__}") from None
            if resp.status_code in _TRANSIENT_STATUS:
                raise Transient(f"token endpoint {redact(url)}: HTTP {resp.status_code}",
                                _retry_after(resp))
            if resp.status_code in (400, 401, 403):
                raise AuthenticationError(
                    f"provider {self.provider.name}: the token endpoint {redact(url)} refused "
                    f"the credentials (HTTP {resp.status_code}); check {self.credentials.where()}")
            if resp.status_code != 200:
                raise DownloadError(f"token endpoint {redact(url)}: HTTP {resp.status_code}")
            try:
                doc = resp.json()
                return Token(doc["access_token"], time.monotonic() + float(doc.get("expires_in", 300)),
                             doc.get("refresh_token"))
            except (ValueError, KeyError):
                raise AuthenticationError(f"token endpoint {redact(url)}: answer has no "
                                          "access_token") from None

        return self._retrying()(once)

    def _oauth_token(self, force_new: bool = False) -> str:
        with self._lock:
            tok = self._bearer
            if tok is not None and not force_new and tok.fresh(self.settings.token_margin_s):
                return tok.value
            cid = self.provider.client_id or ""
            new = None
            if tok is not None and tok.refresh and not force_new:
                try:
                    new = self._token_request({"grant_type": "refresh_token", "client_id": cid,
                                               "refresh_token": tok.refresh})
                except AuthenticationError:
                    new = None  # the refresh token expired too: log in again
            if new is None:
                user, password = self.credentials.values()
                new = self._token_request({"grant_type": "password", "client_id": cid,
                                           "username": user, "password": password})
            self._bearer = new
            return new.value

    def sign(self, href: str, collection: str) -> str:
        """``href`` with the provider's SAS token appended (Planetary Computer); unchanged for
        other providers. One token per collection, renewed before it expires."""
        if self.provider.auth != "sas" or not href.startswith("http"):
            return href
        with self._lock:
            tok = self._sas.get(collection)
            if tok is None or not tok.fresh(self.settings.token_margin_s):
                tok = self._sas_token(collection)
                self._sas[collection] = tok
        return href + ("&" if "?" in href else "?") + tok.value

    def _sas_token(self, collection: str) -> Token:
        url = f"{self.provider.token_url.rstrip('/')}/{collection}"

        def once() -> Token:
            self._count(url)
            try:
                resp = self.client.get(url, headers=self.headers())
            except httpx.TransportError as e:
                raise Transient(f"SAS token endpoint {url}: {type(e).__name__}") from None
            if resp.status_code in _TRANSIENT_STATUS:
                raise Transient(f"SAS token endpoint {url}: HTTP {resp.status_code}",
                                _retry_after(resp))
            if resp.status_code != 200:
                raise AuthenticationError(f"SAS token endpoint {url}: HTTP {resp.status_code}")
            doc = resp.json()
            expiry = doc.get("msft:expiry")
            left = 3600.0
            if expiry:
                import datetime as dt

                when = dt.datetime.fromisoformat(expiry.replace("Z", "+00:00"))
                left = when.timestamp() - time.time()
            return Token(doc["token"], time.monotonic() + left)

        return self._retrying()(once)

    def _count(self, url: str) -> None:
        self.requests += 1
        if self.on_request:
            self.on_request(url)

    # ------------------------------------------------------------------ small GETs
    def get_bytes(self, url: str) -> bytes:
        """GET a small document whole (retried; an error page is refused)."""

        def once() -> bytes:
            self._count(url)
            try:
                resp = self._authorised("GET", url)
            except httpx.TransportError as e:
                raise Transient(f"{redact(url)}: {type(e).__name__}: {e}") from None
            self._raise_for(resp, url)
            return resp.content

        return self._retrying()(once)

    def _authorised(self, method: str, url: str, headers: dict[str, str] | None = None,
                    stream: bool = False) -> httpx.Response:
        """A request with the provider's authorisation; on a 401 the token is renewed once
        and the request made again; a second 401 is an AuthenticationError."""
        h = dict(headers or {})
        for attempt in (0, 1):
            req = self.client.build_request(method, url, headers={**h, **self.headers(
                force_new=attempt == 1)})
            resp = self.client.send(req, stream=stream)
            if resp.status_code != 401 or self.provider.auth == "none":
                return resp
            resp.close()
            if self.provider.auth not in ("oauth2",) or attempt == 1:
                break
        raise self._refused(url)

    def _refused(self, url: str) -> AuthenticationError:
        return AuthenticationError(
            f"provider {self.provider.name}: {redact(url)} refused the access token (HTTP 401)"
            + (" after renewing it" if self.provider.auth == "oauth2" else "")
            + f"; check {self.credentials.where()}")

    def _open_body(self, url: str, headers: dict[str, str]):
        """A streaming urllib3 response for a file body, with the provider's authorisation
        (renewed once on a 401, as :meth:`_authorised`)."""
        if self._pools is None:
            self._pools = _Pools(self.settings)
        pool = self._pools.for_url(url)
        for attempt in (0, 1):
            h = {"User-Agent": _USER_AGENT, **headers, **self.headers(force_new=attempt == 1)}
            resp = pool.urlopen("GET", url, headers=h, preload_content=False,
                                decode_content=False)
            if resp.status != 401 or self.provider.auth == "none":
                return resp
            resp.drain_conn()
            resp.release_conn()
            if self.provider.auth not in ("oauth2",) or attempt == 1:
                break
        raise self._refused(url)

    @staticmethod
    def _raise_for_status(code: int, retry_after: str | None, url: str) -> None:
        if code in _TRANSIENT_STATUS:
            raise Transient(f"{redact(url)}: HTTP {code}", _parse_retry_after(retry_after))
        if code == 403:
            raise AuthenticationError(f"{redact(url)}: HTTP 403 (access refused)")
        if code >= 400:
            raise DownloadError(f"{redact(url)}: HTTP {code}")

    @classmethod
    def _raise_for(cls, resp: httpx.Response, url: str) -> None:
        cls._raise_for_status(resp.status_code, resp.headers.get("Retry-After"), url)

    # ------------------------------------------------------------------ downloads
    def download(self, url: str, dest: str | Path, *, size: int | None = None,
                 checksum: str | None = None, on_bytes: Callable[[int], None] | None = None
                 ) -> int:
        """Download ``url`` to ``dest`` (resumed, retried, verified); return its size.

        The bytes go to ``dest + '.part'``; after a drop, a stall or a server error the
        download goes on from the bytes already there (``Range``), or from zero when the
        server does not honour it. A response whose body is an HTML/XML error page is
        dropped without touching the bytes already good. The finished file is checked
        (``size``, the ``checksum`` multihash, and that it opens as its name says) and only
        then renamed to ``dest`` (with a checksum, the file is not opened: its bytes are the
        provider's); a file failing the check is deleted and fetched again
        (up to ``attempts`` times in all).

        Raises
        ------
        VerificationError
            The file kept failing its checks.
        AuthenticationError
            Credentials missing or refused.
        DownloadError
            Any other failure (the message names the URL without its query string).
        """
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        expect_markup = dest.suffix.lower() in (".xml", ".html", ".htm")
        state = {"total": size, "hash": None}

        def once() -> int:
            have = part.stat().st_size if part.exists() else 0
            total = state["total"]
            state["hash"] = None
            if total is not None and have > total:
                part.unlink()
                have = 0
            if total is None or have < total:
                try:
                    self._fetch_into(url, part, have, state, checksum, expect_markup, on_bytes)
                except _ErrorPage:
                    state["total"] = size  # the page's length says nothing of the file's
                    raise
            try:
                self._verify(part, dest.name, state["total"], checksum, state["hash"])
            except VerificationError as e:
                part.unlink(missing_ok=True)
                state["total"] = size
                raise Transient(str(e)) from None
            n = part.stat().st_size
            os.replace(part, dest)
            return n

        try:
            return self._retrying()(once)
        except Transient as e:
            if "checksum" in str(e) or "does not open" in str(e) or "bytes, expected" in str(e):
                raise VerificationError(str(e)) from None
            raise DownloadError(f"{redact(url)}: gave up after {self.settings.attempts} "
                                f"tries: {e}") from None

    def _fetch_into(self, url: str, part: Path, have: int, state: dict, checksum: str | None,
                    expect_markup: bool, on_bytes: Callable[[int], None] | None) -> None:
        """Append the body of one GET (``Range`` from ``have``) to ``part``.

        The bytes are hashed as they are written when there is a ``checksum``
        (``state["hash"]``, primed with the bytes already there on a resume), so the finished
        file is not read again. Error pages: the first 64 KiB of the body are checked as they
        arrive (a 200 answer that is an HTML page is refused before a byte is written); the
        rest is searched afterwards, from the file, unless the response ended cleanly with
        the whole file and a checksum that will vouch for every byte: when the response broke
        off, left the file short, or there is no checksum. A page found is cut off with
        everything after it, and never appended to."""
        headers = {"Range": f"bytes={have}-"} if have else {}
        self._count(url)
        start = have
        f = None
        clean = False
        try:
            resp = self._open_body(url, headers)
            try:
                if resp.status == 416 and have:
                    return  # nothing left to fetch: verification decides
                self._raise_for_status(resp.status, resp.headers.get("Retry-After"), url)
                if have and resp.status == 200:
                    have = start = 0  # the server ignored the Range: start again
                elif resp.status == 206:
                    first, total = _content_range(resp.headers.get("Content-Range", ""), url)
                    if first != have:
                        raise Transient(f"{redact(url)}: asked bytes from {have}, got {first}")
                    state["total"] = state["total"] or total
                if resp.status == 200 and state["total"] is None:
                    cl = resp.headers.get("Content-Length")
                    state["total"] = int(cl) if cl and cl.isdigit() else None
                ctype = resp.headers.get("Content-Type", "").lower()
                if "text/html" in ctype and not expect_markup:
                    raise _ErrorPage(f"{redact(url)}: the server answered an HTML page "
                                     f"(Content-Type {ctype}) instead of the file")
                f = open(part, "r+b" if have else "wb")
                f.seek(have)
                f.truncate()
                h = new_hasher(checksum) if checksum else None
                if h is not None and have:
                    _hash_prefix(part, have, h)
                sink = _Sink(self._writer(), f, h)
                chunk_bytes = self.settings.chunk_bytes
                seen = 0
                try:
                    while chunk := resp.read1(chunk_bytes):
                        if seen < _BODY_START and looks_like_error_page(
                                chunk[:_BODY_START - seen], expect_markup,
                                body_start=seen == 0):
                            raise _ErrorPage(f"{redact(url)}: an HTML/XML error page where "
                                             f"the data begins (byte {have + seen}); dropped")
                        sink.put(chunk)
                        seen += len(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
                finally:
                    sink.finish()  # every chunk received is written (a disk error raises)
                clean = True
                state["hash"] = h
            finally:
                if clean:
                    resp.release_conn()
                else:
                    resp.close()
                    resp.release_conn()
        except urllib3.exceptions.HTTPError as e:
            if _timed_out(e):
                raise Transient(f"{redact(url)}: {type(_reason(e)).__name__} (stalled)") from None
            raise Transient(f"{redact(url)}: {type(_reason(e)).__name__}: {_reason(e)}") from None
        finally:
            if f is not None:
                end = f.tell()
                complete = clean and state["total"] is not None and end == state["total"]
                if not (complete and checksum) and end > start:
                    f.flush()
                    at = find_error_page(part, start, end, expect_markup)
                    if at is not None:
                        f.truncate(at)
                        state["hash"] = None
                        f.close()
                        raise _ErrorPage(f"{redact(url)}: an HTML/XML error page appeared in "
                                         f"the data at byte {at}; dropped") from None
                f.close()

    @staticmethod
    def _verify(part: Path, name: str, total: int | None, checksum: str | None,
                hashed=None) -> None:
        n = part.stat().st_size if part.exists() else 0
        if total is not None and n != total:
            raise Transient(f"{part.name}: {n} bytes, expected {total}; resuming")
        if checksum:
            # the provider's checksum vouches for every byte: opening the file would only
            # test what the provider published (about 0.6 ms for a zip's directory)
            check_checksum(part, checksum, hashed)
        else:
            check_opens(part, name)


class _Sink:
    """Writes (and hashes) the chunks of one download in the session's writer thread, in
    order, while the next chunk is received: file writes and hashlib both release the
    interpreter lock, so on a fast link the hashing costs no wall time. At most two chunks
    wait; an error of the writer (a full disk) is raised here."""

    def __init__(self, pool, f, h) -> None:
        self.pool, self.f, self.h = pool, f, h
        self.pending: list = []

    def _eat(self, chunk: bytes) -> None:
        self.f.write(chunk)
        if self.h is not None:
            self.h.update(chunk)

    def put(self, chunk: bytes) -> None:
        if len(self.pending) >= 2:
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(self._eat, chunk))

    def finish(self) -> None:
        pending, self.pending = self.pending, []
        for fut in pending:
            fut.result()


def _hash_prefix(path: Path, n: int, h) -> None:
    """Feed the first ``n`` bytes of ``path`` to ``h`` (a resumed download)."""
    with open(path, "rb") as f:
        while n > 0 and (chunk := f.read(min(n, 1 << 20))):
            h.update(chunk)
            n -= len(chunk)


def _reason(e: Exception) -> Exception:
    """The underlying error of a urllib3 MaxRetryError (or ``e``)."""
    return getattr(e, "reason", None) or e


def _timed_out(e: Exception) -> bool:
    return isinstance(_reason(e), (urllib3.exceptions.TimeoutError, TimeoutError))


def _content_range(cr: str, url: str) -> tuple[int, int | None]:
    try:
        unit, rest = cr.split(" ", 1)
        span, total = rest.split("/", 1)
        start = int(span.split("-", 1)[0])
        return start, (int(total) if total.strip() != "*" else None)
    except ValueError:
        raise Transient(f"{redact(url)}: 206 without a valid Content-Range ({cr!r})") from None
