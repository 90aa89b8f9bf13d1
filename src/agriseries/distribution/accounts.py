"""Accounts of the distribution service: users, API tokens, single sign-on, quotas.

* **API tokens**: ``agriseries users add NAME`` makes a user and prints a token once
  (``ags_`` + 32 random bytes, URL-safe); the service database keeps only its SHA-256
  (a token is random, not a password: a plain hash is what a lookup needs and what a
  leaked database cannot be reversed from). ``users revoke NAME`` disables the user and
  all its tokens.
* **Single sign-on**: a bearer JWT from an OIDC provider, checked against the provider's
  JWKS (signature, ``iss``, ``aud``, ``exp``, ``nbf``); its user claim (``sub``) names
  the account, created on first use with the default limits.
* **Signed URLs**: the download list of a basket carries URLs signed with the service's
  secret (HMAC-SHA256 over user, path and expiry), so ``wget -i`` and ``aria2c`` need no
  header; they count against the same user's quota.
* **Limits**: a quota of bytes per UTC day and a number of concurrent downloads per user;
  beyond them the service answers 429 with ``Retry-After``.

The tables live in the service database (SQLite by default, or PostgreSQL), through the
same bounded :class:`~agriseries.production.database.Database` as the production's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
import time
from typing import Any, ClassVar

import sqlalchemy as sa

from ..core.errors import AgriseriesError, ConfigurationError
from ..production.database import METADATA, Database

__all__ = ["AccountError", "Accounts", "DownloadSlots", "User", "hash_token"]

UTC = dt.UTC
TOKEN_PREFIX = "ags_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")

users_table = sa.Table(
    "service_users", METADATA,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double),
    sa.Column("quota_bytes_per_day", sa.BigInteger),
    sa.Column("max_concurrent", sa.Integer),
    sa.Column("origin", sa.String(16), nullable=False, default="token"),  # token | oidc
)
tokens_table = sa.Table(
    "service_tokens", METADATA,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String(100), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double),
    sa.Index("ix_service_tokens_user", "user_name"),
)
usage_table = sa.Table(
    "service_usage", METADATA,
    sa.Column("user_name", sa.String(100), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("bytes", sa.BigInteger, nullable=False),
)
secrets_table = sa.Table(
    "service_secrets", METADATA,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)
basket_table = sa.Table(
    "service_basket", METADATA,
    sa.Column("user_name", sa.String(100), primary_key=True),
    sa.Column("collection", sa.String(200), primary_key=True),
    sa.Column("item_id", sa.String(200), primary_key=True),
    sa.Column("added_at", sa.Double, nullable=False),
)


class AccountError(AgriseriesError, PermissionError):
    """Authentication or authorisation failed: ``status`` 401 (who are you?), 403 (not
    allowed) or 429 (limit reached; ``retry_after`` seconds)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        self.status, self.retry_after = status, retry_after
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class User:
    """A user of the service, as the service checks it."""

    name: str
    quota_bytes_per_day: int
    max_concurrent: int
    origin: str = "token"


def hash_token(token: str) -> str:
    """The SHA-256 (hex) of a token: what the database stores."""
    return hashlib.sha256(token.encode()).hexdigest()


def _today() -> str:
    return dt.datetime.now(UTC).strftime("%Y-%m-%d")


def seconds_to_midnight() -> int:
    """Seconds until the next UTC day (when a daily quota renews)."""
    now = dt.datetime.now(UTC)
    tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - now).total_seconds()) + 1)


class Accounts(Database):
    """Users, tokens, usage and the service secret in the service database.

    Parameters
    ----------
    url
        The service database (SQLite path or SQLAlchemy URL).
    quota_bytes_per_day, max_concurrent
        Defaults of a user without its own limits.
    statement_timeout_s
        Time limit of every database call.
    """

    TABLES: ClassVar[tuple[sa.Table, ...]] = (users_table, tokens_table, usage_table,
                                              secrets_table, basket_table)
    WHAT = "service database"

    def __init__(self, url, *, quota_bytes_per_day: int = 200 * 2**30, max_concurrent: int = 4,
                 statement_timeout_s: float = 10.0) -> None:
        super().__init__(url, statement_timeout_s=statement_timeout_s)
        self.quota_bytes_per_day = int(quota_bytes_per_day)
        self.max_concurrent = int(max_concurrent)
        self._secret: bytes | None = None

    # -- users and tokens -------------------------------------------------------------

    @staticmethod
    def check_name(name: str) -> str:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(f"user name {name!r}: expected 1-100 letters, digits or "
                                     "'._@-', starting with a letter or digit")
        return name

    def add_user(self, name: str, *, quota_bytes_per_day: int | None = None,
                 max_concurrent: int | None = None) -> str:
        """Create a user; its first API token (shown once)."""
        self.check_name(name)
        with self.transaction(f"add user {name}", write=True) as conn:
            if conn.execute(sa.select(users_table.c.name)
                            .where(users_table.c.name == name)).first():
                raise ConfigurationError(f"user {name!r} exists already (agriseries users "
                                         "token NAME makes a new token)")
            conn.execute(sa.insert(users_table).values(
                name=name, created_at=time.time(), revoked_at=None,
                quota_bytes_per_day=quota_bytes_per_day, max_concurrent=max_concurrent,
                origin="token"))
        return self.new_token(name)

    def new_token(self, name: str) -> str:
        """A new API token for an existing, active user (shown once)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.transaction(f"new token for {name}", write=True) as conn:
            row = conn.execute(sa.select(users_table.c.revoked_at)
                               .where(users_table.c.name == name)).first()
            if row is None:
                raise ConfigurationError(f"no user {name!r} (agriseries users list)")
            if row[0] is not None:
                raise ConfigurationError(f"user {name!r} is revoked")
            conn.execute(sa.insert(tokens_table).values(
                token_hash=hash_token(token), user_name=name, created_at=time.time()))
        return token

    def revoke(self, name: str) -> None:
        """Disable a user and every token of it."""
        now = time.time()
        with self.transaction(f"revoke user {name}", write=True) as conn:
            res = conn.execute(sa.update(users_table).where(users_table.c.name == name)
                               .values(revoked_at=now))
            if res.rowcount == 0:
                raise ConfigurationError(f"no user {name!r} (agriseries users list)")
            conn.execute(sa.update(tokens_table).where(
                tokens_table.c.user_name == name, tokens_table.c.revoked_at.is_(None))
                .values(revoked_at=now))

    def users(self) -> list[dict[str, Any]]:
        """Every user: name, origin, created, revoked, limits, active tokens, bytes today."""
        today = _today()
        with self.transaction("list users", write=False) as conn:
            rows = conn.execute(sa.select(users_table).order_by(users_table.c.name)).mappings().all()
            ntok = dict(conn.execute(sa.select(tokens_table.c.user_name, sa.func.count())
                                     .where(tokens_table.c.revoked_at.is_(None))
                                     .group_by(tokens_table.c.user_name)).all())
            used = dict(conn.execute(sa.select(usage_table.c.user_name, usage_table.c.bytes)
                                     .where(usage_table.c.day == today)).all())
        iso = (lambda t: None if t is None else
               dt.datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds"))
        return [{"name": r["name"], "origin": r["origin"], "created": iso(r["created_at"]),
                 "revoked": iso(r["revoked_at"]),
                 "quota_bytes_per_day": r["quota_bytes_per_day"] or self.quota_bytes_per_day,
                 "max_concurrent": r["max_concurrent"] or self.max_concurrent,
                 "tokens": int(ntok.get(r["name"], 0)), "bytes_today": int(used.get(r["name"], 0))}
                for r in rows]

    def _user(self, row) -> User:
        return User(row["name"], int(row["quota_bytes_per_day"] or self.quota_bytes_per_day),
                    int(row["max_concurrent"] or self.max_concurrent), row["origin"])

    def user_for_token(self, token: str) -> User:
        """The user an API token belongs to.

        Raises
        ------
        AccountError
            401: unknown or revoked token; 403: revoked user.
        """
        with self.transaction("check a token", write=False) as conn:
            row = conn.execute(sa.select(tokens_table.c.user_name, tokens_table.c.revoked_at)
                               .where(tokens_table.c.token_hash == hash_token(token))).first()
            if row is None:
                raise AccountError(401, "unknown API token")
            if row[1] is not None:
                raise AccountError(401, "this API token was revoked")
            user = conn.execute(sa.select(users_table)
                                .where(users_table.c.name == row[0])).mappings().first()
        if user is None or user["revoked_at"] is not None:
            raise AccountError(403, f"user {row[0]!r} is revoked")
        return self._user(user)

    def user_named(self, name: str, *, create_oidc: bool = False) -> User:
        """An active user by name; a single sign-on user is created on first use."""
        with self.transaction(f"look up user {name}", write=create_oidc) as conn:
            row = conn.execute(sa.select(users_table)
                               .where(users_table.c.name == name)).mappings().first()
            if row is None and create_oidc:
                conn.execute(sa.insert(users_table).values(
                    name=name, created_at=time.time(), origin="oidc"))
                row = conn.execute(sa.select(users_table)
                                   .where(users_table.c.name == name)).mappings().first()
        if row is None:
            raise AccountError(401, f"no user {name!r}")
        if row["revoked_at"] is not None:
            raise AccountError(403, f"user {name!r} is revoked")
        return self._user(row)

    # -- usage --------------------------------------------------------------------------

    def used_today(self, name: str) -> int:
        """Bytes the user downloaded today (UTC)."""
        with self.transaction("read usage", write=False) as conn:
            v = conn.execute(sa.select(usage_table.c.bytes).where(
                usage_table.c.user_name == name, usage_table.c.day == _today())).scalar()
        return int(v or 0)

    def add_usage(self, name: str, nbytes: int) -> None:
        """Count downloaded bytes against today's quota."""
        if nbytes <= 0:
            return
        with self.transaction("record usage", write=True) as conn:
            stmt = self._insert(usage_table).values(user_name=name, day=_today(), bytes=nbytes)
            stmt = stmt.on_conflict_do_update(index_elements=["user_name", "day"],
                                              set_={"bytes": usage_table.c.bytes + nbytes})
            conn.execute(stmt)

    def check_quota(self, user: User, nbytes: int) -> None:
        """Raise 429 when ``nbytes`` more would pass today's quota."""
        used = self.used_today(user.name)
        if used + nbytes > user.quota_bytes_per_day:
            raise AccountError(429, f"daily download quota of user {user.name!r} reached "
                               f"({used} of {user.quota_bytes_per_day} bytes used today, this "
                               f"download is {nbytes} bytes)", retry_after=seconds_to_midnight())

    # -- signed URLs --------------------------------------------------------------------

    def secret(self) -> bytes:
        """The service's signing secret (made on first use, kept in the database)."""
        if self._secret is None:
            with self.transaction("read the signing secret", write=True) as conn:
                v = conn.execute(sa.select(secrets_table.c.value)
                                 .where(secrets_table.c.name == "url-signing")).scalar()
                if v is None:
                    v = secrets.token_hex(32)
                    conn.execute(sa.insert(secrets_table).values(name="url-signing", value=v))
            self._secret = bytes.fromhex(v)
        return self._secret

    def sign(self, user: str, path: str, expires: int) -> str:
        """The signature of a download URL path for ``user`` valid until ``expires``."""
        msg = f"{user}\n{path}\n{int(expires)}".encode()
        return hmac.new(self.secret(), msg, hashlib.sha256).hexdigest()

    def check_signature(self, user: str, path: str, expires: str, sig: str) -> User:
        """The user of a signed URL (401 if forged or expired)."""
        try:
            exp = int(expires)
        except (TypeError, ValueError):
            raise AccountError(401, f"signed URL: expiry {expires!r} is not a number") from None
        if not hmac.compare_digest(self.sign(user, path, exp), str(sig)):
            raise AccountError(401, "signed URL: bad signature")
        if exp < time.time():
            raise AccountError(401, "signed URL: expired")
        return self.user_named(user)


class DownloadSlots:
    """Concurrent downloads per user, in this service process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, int] = {}

    def acquire(self, user: User) -> None:
        with self._lock:
            n = self._active.get(user.name, 0)
            if n >= user.max_concurrent:
                raise AccountError(429, f"user {user.name!r} already runs {n} download(s), the "
                                   f"limit is {user.max_concurrent}", retry_after=5)
            self._active[user.name] = n + 1

    def release(self, user: User) -> None:
        with self._lock:
            n = self._active.get(user.name, 0) - 1
            if n > 0:
                self._active[user.name] = n
            else:
                self._active.pop(user.name, None)

    def active(self, name: str) -> int:
        with self._lock:
            return self._active.get(name, 0)
