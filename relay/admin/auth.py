"""Who may use the admin page and its API: whoever holds `admin.token`.

The API takes it as `Authorization: Bearer <token>`. The pages take it once, in a login
form, and then carry a session cookie signed with a key derived from the token, so
the token itself never travels again and changing it ends every session. A form that
changes something carries a CSRF token derived from the session, so another site
cannot post it in the operator's name. Every comparison runs in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SESSION_COOKIE = "relay_admin"
# A working day: long enough not to interrupt an operator, short enough that a cookie
# left on a shared machine dies by itself.
SESSION_TTL_S = 12 * 3600
# A cookie stamped this far in the future is forged or from a skewed clock: refused.
_CLOCK_SKEW_S = 60
_VERSION = "v1"
_SESSION_LABEL = b"relay admin session v1"


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its random nonce (CSRF tokens derive from it) and age."""

    nonce: str
    issued_at_s: int


class AdminKeys:
    """The admin token's digest and the keys derived from it; never the token itself."""

    def __init__(self, token: str) -> None:
        secret = token.encode("utf-8", "surrogatepass")
        self._token_digest = hashlib.sha256(secret).digest()
        self._signing_key = hmac.new(secret, _SESSION_LABEL, hashlib.sha256).digest()

    def token_matches(self, candidate: str) -> bool:
        """Constant time, whatever the lengths: both sides are hashed first."""
        digest = hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    def bearer_matches(self, authorization: str | None) -> bool:
        """`Authorization: Bearer <admin.token>`, the scheme's case ignored."""
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(credentials.strip())

    def new_session(self, now_s: int) -> str:
        """A cookie value: version, issue time and nonce, then their signature."""
        body = f"{_VERSION}.{now_s}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._sign(body)}"

    def session(self, cookie: str | None, now_s: int) -> Session | None:
        """The session a cookie proves, or None if it is absent, forged or expired."""
        if not cookie or len(cookie) > 200:
            return None
        body, _, signature = cookie.rpartition(".")
        version, _, rest = body.partition(".")
        issued, _, nonce = rest.partition(".")
        if version != _VERSION or not issued.isdigit() or not nonce:
            return None
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        issued_at_s = int(issued)
        if not now_s - SESSION_TTL_S < issued_at_s <= now_s + _CLOCK_SKEW_S:
            return None
        return Session(nonce, issued_at_s)

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf.{session.nonce}")

    def csrf_matches(self, session: Session, candidate: str | None) -> bool:
        return hmac.compare_digest((candidate or "").encode(), self.csrf_token(session).encode())

    def _sign(self, text: str) -> str:
        mac = hmac.new(self._signing_key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")
