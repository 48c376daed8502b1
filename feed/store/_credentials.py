"""AWS credentials from the standard chain, refreshed before they expire.

botocore's resolver (through aiobotocore, so a refresh never blocks the event loop)
is the well-kept implementation of the chain: environment, shared config and
profiles, SSO, web identity (IRSA), container and instance roles, each with its
own refresh. Only an endpoint on this host (an emulator) with nothing in the
chain gets dummy credentials.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import urlsplit

from aiobotocore.session import get_session

from feed.errors import StorageError
from feed.store._sigv4 import Credentials

__all__ = ["CredentialSource", "NoCredentials", "is_loopback", "resolve_credentials"]

log = logging.getLogger(__name__)

DUMMY = Credentials("local", "local")


class NoCredentials(StorageError):
    """The AWS chain found no credentials for a real endpoint."""


class CredentialSource:
    """Where the client's credentials come from, and the current ones."""

    def __init__(self, resolved: Any | None, method: str) -> None:
        self._resolved = resolved  # aiobotocore credentials, or None for the dummy pair
        self.method = method
        self.static = resolved is None or not hasattr(resolved, "refresh_needed")
        self._frozen: Credentials | None = None

    async def current(self) -> Credentials:
        """The credentials to sign with now; refreshed credentials are fetched before
        they expire (botocore's advisory and mandatory windows)."""
        if self._frozen is not None and self.static:
            return self._frozen
        if self._resolved is None:
            self._frozen = DUMMY
            return DUMMY
        frozen = await self._resolved.get_frozen_credentials()
        credentials = Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)
        self._frozen = credentials
        return credentials

    def describe(self) -> str:
        """The source and the key's last characters, for error messages and logs."""
        key = self._frozen.access_key if self._frozen else ""
        return f"{self.method}, key …{key[-4:]}" if key else self.method

    def botocore_kwargs(self) -> dict[str, str]:
        """Arguments for an aioboto3 session: the dummy pair, or nothing (its own chain)."""
        if self._resolved is None:
            return {"aws_access_key_id": DUMMY.access_key,
                    "aws_secret_access_key": DUMMY.secret_key}
        return {}


def is_loopback(endpoint: str | None) -> bool:
    """Whether ``endpoint`` is an address on this host (an emulator, never AWS)."""
    if not endpoint:
        return False
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def resolve_credentials(endpoint: str | None, region: str) -> CredentialSource:
    """The chain's credentials; dummy ones only for a loopback endpoint with none.

    Raises :class:`NoCredentials` for any other endpoint when the chain is empty.
    """
    session = get_session()
    session.set_config_variable("region", region)
    if is_loopback(endpoint):
        # An emulator accepts any key: do not wait on the instance-metadata service,
        # which only exists on AWS hosts.
        session.set_config_variable("metadata_service_num_attempts", 1)
        session.set_config_variable("metadata_service_timeout", 0.2)
    resolved = await session.get_credentials()
    if resolved is None:
        if is_loopback(endpoint):
            return CredentialSource(None, "dummy credentials for a local endpoint")
        raise NoCredentials(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a "
            "profile (AWS_PROFILE), SSO, web identity (AWS_WEB_IDENTITY_TOKEN_FILE), or "
            "run with a container or instance role",
            "NoCredentials",
        )
    method = str(getattr(resolved, "method", "") or "the AWS credential chain")
    source = CredentialSource(resolved, method)
    await source.current()
    log.info("AWS credentials from %s", source.describe())
    return source
