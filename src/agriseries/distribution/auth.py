"""Who is asking: API tokens, single sign-on bearer JWTs (OIDC), signed URLs.

``Authorization: Bearer ags_...`` is an API token (:mod:`.accounts`). Any other bearer
value is taken as a JWT when single sign-on is configured: its signature is checked with
the issuer's JWKS (fetched with a time limit, cached), and ``iss``, ``aud``, ``exp`` (and
``nbf``, ``iat``) must hold; the claim ``oidc_user_claim`` names the user. A download URL
may instead carry ``user``, ``expires`` and ``signature`` query parameters (the basket's
download list).
"""

from __future__ import annotations

import threading

from starlette.concurrency import run_in_threadpool

from ..core.errors import ConfigurationError
from .accounts import TOKEN_PREFIX, AccountError, Accounts, User

__all__ = ["Authenticator"]


class Authenticator:
    """Turns a request into a :class:`~.accounts.User` or an :class:`~.accounts.AccountError`."""

    def __init__(self, settings, accounts: Accounts) -> None:
        self.settings = settings
        self.accounts = accounts
        self._jwks = None
        self._lock = threading.Lock()

    def _jwks_client(self):
        with self._lock:
            if self._jwks is None:
                import jwt

                self._jwks = jwt.PyJWKClient(self.settings.oidc_jwks_url, cache_keys=True,
                                             lifespan=300, timeout=10)
            return self._jwks

    def _from_jwt(self, token: str) -> User:
        import jwt

        s = self.settings
        try:
            key = self._jwks_client().get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=["RS256", "RS384", "RS512", "ES256",
                                                             "ES384", "PS256"],
                                audience=s.oidc_audience, issuer=s.oidc_issuer,
                                options={"require": ["exp", "iss", "aud"]}, leeway=30)
        except jwt.ExpiredSignatureError:
            raise AccountError(401, "bearer token expired") from None
        except jwt.PyJWKClientConnectionError as e:
            raise AccountError(503, f"single sign-on keys cannot be fetched: {e}") from None
        except jwt.PyJWTError as e:
            raise AccountError(401, f"bearer token rejected: {e}") from None
        name = claims.get(s.oidc_user_claim)
        if not isinstance(name, str) or not name:
            raise AccountError(401, f"bearer token has no {s.oidc_user_claim!r} claim")
        try:
            self.accounts.check_name(name)
        except ConfigurationError:
            raise AccountError(401, f"bearer token user {name!r} is not a valid user name") \
                from None
        return self.accounts.user_named(name, create_oidc=True)

    def _resolve(self, authorization: str | None) -> User:
        if not authorization:
            raise AccountError(401, "this needs an API token: 'Authorization: Bearer <token>' "
                               "(agriseries users add NAME makes one)")
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise AccountError(401, "expected 'Authorization: Bearer <token>'")
        if value.startswith(TOKEN_PREFIX):
            return self.accounts.user_for_token(value)
        if self.settings.oidc_jwks_url and value.count(".") == 2:
            return self._from_jwt(value)
        raise AccountError(401, "unknown API token")

    async def user(self, request) -> User:
        """The user of a request (401 without credentials or with bad ones, 403 revoked)."""
        return await run_in_threadpool(self._resolve, request.headers.get("authorization"))

    async def download_user(self, request) -> User:
        """As :meth:`user`, also taking a signed URL."""
        q = request.query_params
        if "signature" in q and not request.headers.get("authorization"):
            return await run_in_threadpool(self.accounts.check_signature, q.get("user", ""),
                                           request.url.path, q.get("expires", ""),
                                           q.get("signature", ""))
        return await self.user(request)
