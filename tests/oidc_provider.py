"""A small OpenID Connect provider for the tests, on loopback: authorization code flow with
PKCE (S256) for registered public clients, a login form with user names and passwords, and
access tokens that are real RS256 JWTs (PyJWT, a fresh 2048-bit RSA key) whose keys are
served as a JWKS -- what the service checks through its normal single sign-on path.

It is strict where a provider must be: an unknown client or a redirect URI that is not
registered is refused (no redirect), a code is used once within 60 s by the client and
redirect URI it was given to, and only with the verifier whose SHA-256 is the challenge.
The token endpoint answers cross-origin requests of the registered origins (CORS), as a
provider set up for browser clients does.

No PyPI package was used: oidc-provider-mock (the maintained test provider) does not check
PKCE and issues opaque access tokens in the version this Python can install.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import json
import secrets
import threading
import time
import urllib.parse

__all__ = ["Provider"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Provider:
    """The provider (``with Provider(audience) as p: p.issuer``)."""

    def __init__(self, audience: str, users: dict[str, str] | None = None,
                 token_ttl_s: int = 600) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.audience = audience
        self.users = dict(users or {})
        self.clients: dict[str, set[str]] = {}  # client id -> redirect URIs
        self.origins: set[str] = set()
        self.token_ttl_s = token_ttl_s
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(4)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}
        self.codes: dict[str, dict] = {}
        self.issued: list[dict] = []  # the claims of each access token given
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"

    def register(self, client_id: str, redirect_uri: str) -> None:
        """A public client and one of its redirect URIs (and its origin for CORS)."""
        self.clients.setdefault(client_id, set()).add(redirect_uri)
        u = urllib.parse.urlsplit(redirect_uri)
        self.origins.add(f"{u.scheme}://{u.netloc}")

    def __enter__(self) -> Provider:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ the protocol

    def discovery(self) -> dict:
        return {"issuer": self.issuer, "authorization_endpoint": self.issuer + "/authorize",
                "token_endpoint": self.issuer + "/token", "jwks_uri": self.issuer + "/jwks",
                "response_types_supported": ["code"], "grant_types_supported":
                ["authorization_code"], "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"]}

    def _check_authorize(self, q: dict) -> str | None:
        """What is wrong with an authorization request (None: nothing)."""
        if q.get("response_type") != "code":
            return "response_type must be code"
        uris = self.clients.get(q.get("client_id", ""))
        if uris is None:
            return f"unknown client {q.get('client_id')!r}"
        if q.get("redirect_uri") not in uris:
            return f"redirect_uri {q.get('redirect_uri')!r} is not registered"
        if q.get("code_challenge_method") != "S256" or len(q.get("code_challenge", "")) < 43:
            return "PKCE is required: code_challenge with code_challenge_method S256"
        return None

    def _token(self, form: dict) -> tuple[int, dict]:
        import jwt

        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self.lock:
            grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or grant["expires"] < time.time():
            return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
        if form.get("client_id") != grant["client_id"] or \
                form.get("redirect_uri") != grant["redirect_uri"]:
            return 400, {"error": "invalid_grant", "error_description": "client or redirect "
                         "URI differs from the authorization request"}
        verifier = form.get("code_verifier", "")
        if _b64url(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verifier does not "
                         "match the challenge"}
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": grant["user"],
                  "azp": grant["client_id"], "iat": now, "exp": now + self.token_ttl_s,
                  "scope": grant["scope"], "jti": secrets.token_hex(8)}
        self.issued.append(claims)
        access = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        id_token = jwt.encode({**claims, "aud": grant["client_id"]}, self.key,
                              algorithm="RS256", headers={"kid": self.kid})
        return 200, {"access_token": access, "id_token": id_token, "token_type": "Bearer",
                     "expires_in": self.token_ttl_s, "scope": grant["scope"]}

    def _form(self, q: dict, error: str = "") -> bytes:
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in q.items() if k not in ("username", "password"))
        return (f"<!doctype html><title>Test provider: sign in</title><h1>Sign in</h1>"
                f"<p id='error'>{html.escape(error)}</p><form method='post' action='/authorize'>"
                f"{hidden}<label>User <input id='username' name='username'></label>"
                f"<label>Password <input id='password' name='password' type='password'></label>"
                f"<button id='login' type='submit'>Sign in</button></form>").encode()

    def _handler(self):
        provider = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status: int, body: bytes, ctype: str, extra=()) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, doc: dict, extra=()) -> None:
                self._send(status, json.dumps(doc).encode(), "application/json", extra)

            def _cors(self) -> list[tuple[str, str]]:
                origin = self.headers.get("Origin", "")
                return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")] \
                    if origin in provider.origins else []

            def do_GET(self):  # noqa: N802
                u = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                if u.path == "/.well-known/openid-configuration":
                    return self._json(200, provider.discovery())
                if u.path == "/jwks":
                    return self._json(200, provider.jwks)
                if u.path == "/authorize":
                    wrong = provider._check_authorize(q)
                    if wrong:
                        return self._send(400, wrong.encode(), "text/plain")
                    return self._send(200, provider._form(q), "text/html; charset=utf-8")
                self._send(404, b"not found", "text/plain")

            def do_OPTIONS(self):  # noqa: N802 -- CORS preflight of the token endpoint
                self._send(204, b"", "text/plain", self._cors() + [
                    ("Access-Control-Allow-Methods", "POST"),
                    ("Access-Control-Allow-Headers", "Content-Type")])

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                path = urllib.parse.urlsplit(self.path).path
                if path == "/token":
                    status, doc = provider._token(form)
                    return self._json(status, doc, self._cors())
                if path == "/authorize":
                    wrong = provider._check_authorize(form)
                    if wrong:
                        return self._send(400, wrong.encode(), "text/plain")
                    user = form.get("username", "")
                    if provider.users.get(user) != form.get("password") or not user:
                        return self._send(200, provider._form(form, "wrong user or password"),
                                          "text/html; charset=utf-8")
                    code = secrets.token_urlsafe(24)
                    with provider.lock:
                        provider.codes[code] = {
                            "client_id": form["client_id"], "redirect_uri": form["redirect_uri"],
                            "challenge": form["code_challenge"], "user": user,
                            "scope": form.get("scope", "openid"), "expires": time.time() + 60}
                    back = form["redirect_uri"] + "?" + urllib.parse.urlencode(
                        {"code": code, "state": form.get("state", "")})
                    self.send_response(302)
                    self.send_header("Location", back)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                self._send(404, b"not found", "text/plain")

        return H
