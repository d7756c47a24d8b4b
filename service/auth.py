"""Bearer-token authentication for mutating routes.

Tokens come from ``Settings.tokens`` (submitter name -> token). The presented token is compared
with every configured token using :func:`hmac.compare_digest` (constant time, and no early exit
on the first match, so timing reveals neither the token nor which submitter it belongs to).

- no ``Authorization`` header, or not ``Bearer <token>``  -> 401 (with ``WWW-Authenticate``)
- a token that matches none                               -> 403

Example::

    @router.post("/x")
    def handler(submitter: Annotated[str, Depends(require_token)]) -> ...
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header

from service.deps import get_settings
from service.errors import AuthForbiddenError, AuthMissingError
from service.settings import Settings


def match_token(presented: str, tokens: dict[str, str]) -> str | None:
    """The submitter whose token equals ``presented``, checking all of them in constant time."""
    found = None
    given = presented.encode()
    for name, token in tokens.items():
        if hmac.compare_digest(given, token.encode()):
            found = name
    return found


async def require_token(
    settings: Annotated[Settings, Depends(get_settings)],
    authorization: Annotated[str | None, Header(description="Bearer <token>")] = None,
) -> str:
    """The submitter's name, or 401/403."""
    if not authorization:
        raise AuthMissingError("missing Authorization header; send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthMissingError("Authorization must be 'Bearer <token>'")
    name = match_token(token.strip(), settings.tokens)
    if name is None:
        raise AuthForbiddenError("the bearer token is not valid for this service")
    return name
