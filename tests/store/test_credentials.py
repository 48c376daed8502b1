"""Credentials: the standard AWS chain; dummy ones only for a local endpoint with none."""

from __future__ import annotations

from pathlib import Path

import pytest

from feed.store._credentials import NoCredentials, is_loopback, resolve_credentials


@pytest.fixture
def empty_chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No credentials anywhere: no environment, no files, no instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


@pytest.mark.parametrize(("endpoint", "loopback"), [
    ("http://127.0.0.1:8000", True), ("http://localhost:8000", True),
    ("http://[::1]:8000", True), ("http://127.3.2.1", True),
    ("https://dynamodb.ap-south-1.amazonaws.com", False), ("http://10.0.0.5:8000", False),
    ("http://dynamodb-local:8000", False), (None, False),
])
def test_loopback_endpoints(endpoint: str | None, loopback: bool) -> None:
    assert is_loopback(endpoint) is loopback


async def test_a_local_endpoint_with_nothing_in_the_chain_gets_dummy_credentials(
    empty_chain: Path,
) -> None:
    source = await resolve_credentials("http://127.0.0.1:8000", "ap-south-1")
    assert (await source.current()).access_key == "local"
    assert "dummy" in source.describe()


@pytest.mark.parametrize("endpoint", ["https://dynamodb.eu-west-1.amazonaws.com",
                                      "http://dynamodb-local:8000", None])
async def test_any_other_endpoint_with_nothing_in_the_chain_is_an_error(
    empty_chain: Path, endpoint: str | None,
) -> None:
    with pytest.raises(NoCredentials, match="no AWS credentials found"):
        await resolve_credentials(endpoint, "eu-west-1")


async def test_environment_credentials_are_used_even_for_a_local_endpoint(
    empty_chain: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    source = await resolve_credentials("http://127.0.0.1:8000", "ap-south-1")
    current = await source.current()
    assert (current.access_key, current.secret_key, current.token) == (
        "AKIAENVIRONMENT1", "secret", "token")
    assert source.describe() == "env, key …ENT1"


async def test_a_named_profile_from_the_shared_files(
    empty_chain: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (empty_chain / "credentials").write_text(
        "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n"
        "[feed]\naws_access_key_id = AKIAPROFILEFEED\naws_secret_access_key = p\n")
    monkeypatch.setenv("AWS_PROFILE", "feed")
    source = await resolve_credentials("https://dynamodb.ap-south-1.amazonaws.com",
                                       "ap-south-1")
    assert (await source.current()).access_key == "AKIAPROFILEFEED"
    assert source.method == "shared-credentials-file"


async def test_a_credential_process_profile_is_refreshed_through_the_chain(
    empty_chain: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A profile whose credentials come from a program (as SSO helpers do) and expire:
    the source refreshes them before they do."""
    counter = empty_chain / "count"
    program = empty_chain / "issue.sh"
    program.write_text(
        "#!/bin/sh\n"
        f'n=$(($(cat {counter} 2>/dev/null || echo 0) + 1)); echo $n > {counter}\n'
        'exp=$(date -u -d "+2 seconds" +%Y-%m-%dT%H:%M:%SZ)\n'
        'printf \'{"Version": 1, "AccessKeyId": "AKIAPROC%s", "SecretAccessKey": "s",'
        ' "SessionToken": "t", "Expiration": "%s"}\' "$n" "$exp"\n')
    program.chmod(0o755)
    (empty_chain / "config").write_text(f"[profile proc]\ncredential_process = {program}\n")
    monkeypatch.setenv("AWS_PROFILE", "proc")
    source = await resolve_credentials("https://dynamodb.ap-south-1.amazonaws.com",
                                       "ap-south-1")
    assert source.method == "custom-process"
    first = (await source.current()).access_key
    second = (await source.current()).access_key
    assert first != second  # expiring inside botocore's refresh window: refreshed each time
