"""Unit tests of config/settings.py: the environment in, Settings or SettingsError out."""

from __future__ import annotations

import re

import pytest

from config.settings import RankWeights, Settings, SettingsError

TOKENS = "token-aaaa-1111,token-bbbb-2222"


def test_documented_defaults() -> None:
    s = Settings.from_env({})
    assert s.celebrity_followers == 10_000
    assert s.timeline_cache_items == 800
    assert s.backfill_on_follow == 200
    assert s.rate_limit_per_token == 0
    assert s.cursor_ttl_seconds == 3_600
    assert s.recommended_every == 10
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.cache_redis_url == s.redis_url
    assert s.dynamodb_endpoint is None
    assert s.aws_region == "ap-south-1"
    assert s.table_prefix == "feed_"
    assert s.api_tokens == ()
    assert s.log_level == "INFO"
    assert s.log_json is True
    assert dict(s.regions) == {}
    assert s.weights == RankWeights()
    assert re.fullmatch(r"[0-9a-f]{64}", s.cursor_secret)


def test_from_env_defaults_equal_constructor_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_does_not_read_os_environ_when_given_a_mapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEED_CELEBRITY_FOLLOWERS", "5")
    assert Settings.from_env({}).celebrity_followers == 10_000
    assert Settings.from_env().celebrity_followers == 5


def test_values_are_read() -> None:
    s = Settings.from_env({
        "FEED_REDIS_URL": "redis://queue:6379/1",
        "FEED_CACHE_REDIS_URL": "redis://cache:7000/0",
        "FEED_DYNAMODB_ENDPOINT": "http://dynamo:8000/",
        "FEED_AWS_REGION": "eu-west-1",
        "FEED_TABLE_PREFIX": "prod.feed-",
        "FEED_CELEBRITY_FOLLOWERS": "50_000",
        "FEED_TIMELINE_CACHE_ITEMS": " 1200 ",
        "FEED_BACKFILL_ON_FOLLOW": "0",
        "FEED_RATE_LIMIT_PER_TOKEN": "2.5",
        "FEED_CURSOR_TTL_SECONDS": "60",
        "FEED_LOG_LEVEL": "debug",
        "FEED_LOG_JSON": "off",
        "FEED_RANK_W_RECENCY": "2",
        "FEED_RANK_HALF_LIFE_HOURS": "12.5",
    })
    assert s.redis_url == "redis://queue:6379/1"
    assert s.cache_redis_url == "redis://cache:7000/0"
    assert s.dynamodb_endpoint == "http://dynamo:8000"  # trailing slash dropped
    assert s.aws_region == "eu-west-1"
    assert s.table_prefix == "prod.feed-"
    assert s.celebrity_followers == 50_000
    assert s.timeline_cache_items == 1200
    assert s.backfill_on_follow == 0
    assert s.rate_limit_per_token == 2.5
    assert s.cursor_ttl_seconds == 60
    assert s.log_level == "DEBUG"
    assert s.log_json is False
    assert s.weights == RankWeights(recency=2.0, half_life_hours=12.5)


def test_blank_values_mean_default() -> None:
    s = Settings.from_env({"FEED_CELEBRITY_FOLLOWERS": "  ", "FEED_REDIS_URL": ""})
    assert s.celebrity_followers == 10_000
    assert s.redis_url == "redis://127.0.0.1:6379/0"


def test_cache_redis_url_defaults_to_queue_redis() -> None:
    s = Settings.from_env({"FEED_REDIS_URL": "rediss://queue.example:6380/3"})
    assert s.redis_url == "rediss://queue.example:6380/3"
    assert s.cache_redis_url == "rediss://queue.example:6380/3"
    s = Settings.from_env({"FEED_REDIS_URL": "redis://a:1/0",
                           "FEED_CACHE_REDIS_URL": "redis://b:2/0"})
    assert (s.redis_url, s.cache_redis_url) == ("redis://a:1/0", "redis://b:2/0")


@pytest.mark.parametrize("url", ["redis://h:1/0", "rediss://h:1/0", "unix:///tmp/r.sock"])
def test_redis_url_schemes_accepted(url: str) -> None:
    assert Settings.from_env({"FEED_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(("name", "value"), [
    ("FEED_CELEBRITY_FOLLOWERS", "abc"),
    ("FEED_CELEBRITY_FOLLOWERS", "-1"),
    ("FEED_CELEBRITY_FOLLOWERS", "0"),
    ("FEED_CELEBRITY_FOLLOWERS", "1.5"),
    ("FEED_TIMELINE_CACHE_ITEMS", "many"),
    ("FEED_TIMELINE_CACHE_ITEMS", "0"),
    ("FEED_BACKFILL_ON_FOLLOW", "-1"),
    ("FEED_RATE_LIMIT_PER_TOKEN", "-0.5"),
    ("FEED_RATE_LIMIT_PER_TOKEN", "nan"),
    ("FEED_RATE_LIMIT_PER_TOKEN", "inf"),
    ("FEED_RATE_LIMIT_PER_TOKEN", "fast"),
    ("FEED_CURSOR_TTL_SECONDS", "0"),
    ("FEED_REDIS_URL", "http://x"),
    ("FEED_REDIS_URL", "localhost:6379"),
    ("FEED_CACHE_REDIS_URL", "http://x"),
    ("FEED_DYNAMODB_ENDPOINT", "ftp://x"),
    ("FEED_DYNAMODB_ENDPOINT", "localhost:8000"),
    ("FEED_AWS_REGION", "Mumbai"),
    ("FEED_AWS_REGION", "ap-south"),
    ("FEED_AWS_REGION", "AP-SOUTH-1"),
    ("FEED_TABLE_PREFIX", "bad prefix"),
    ("FEED_TABLE_PREFIX", "p" * 65),
    ("FEED_API_TOKENS", "short"),
    ("FEED_API_TOKENS", "long-enough-token,short"),
    ("FEED_API_TOKENS", "long-enough token"),
    ("FEED_CURSOR_SECRET", "too-short"),
    ("FEED_LOG_LEVEL", "LOUD"),
    ("FEED_LOG_JSON", "maybe"),
    ("FEED_DYNAMODB_RETRY_MODE", "legacy"),
    ("FEED_DYNAMODB_PITR", "sometimes"),
    ("FEED_RANK_W_AFFINITY", "-1"),
    ("FEED_RANK_HALF_LIFE_HOURS", "0"),
    ("FEED_REGIONS", "ap-south-1"),
    ("FEED_REGIONS", "ap-south-1=http://a:1,mars=http://b:2"),
    ("FEED_REGIONS", "ap-south-1=ftp://a"),
    ("FEED_REGIONS", "=http://a:1"),
])
def test_invalid_value_raises_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({name: value})
    message = str(exc.value)
    assert message.startswith(f"{name}: ")
    if name in ("FEED_API_TOKENS", "FEED_CURSOR_SECRET"):  # secrets are never echoed
        assert value not in message
        assert "short" not in message
    else:
        assert repr(value.strip()) in message or repr(value) in message
    assert isinstance(exc.value, ValueError)


def test_api_tokens_are_comma_separated() -> None:
    s = Settings.from_env({"FEED_API_TOKENS": " token-aaaa-1111 ,, token-bbbb-2222,"})
    assert s.api_tokens == ("token-aaaa-1111", "token-bbbb-2222")
    assert Settings.from_env({"FEED_API_TOKENS": "only-one-token"}).api_tokens == (
        "only-one-token",)


def test_regions_are_parsed() -> None:
    s = Settings.from_env({
        "FEED_REGIONS": "ap-south-1=http://127.0.0.1:8000/, eu-west-1=,"
                        "us-east-1=https://dynamodb.us-east-1.amazonaws.com|us_",
    })
    assert dict(s.regions) == {
        "ap-south-1": ("http://127.0.0.1:8000", ""),
        "eu-west-1": (None, ""),
        "us-east-1": ("https://dynamodb.us-east-1.amazonaws.com", "us_"),
    }


def test_regions_prefix_without_endpoint() -> None:
    s = Settings.from_env({"FEED_REGIONS": "eu-west-1=|eu_"})
    assert dict(s.regions) == {"eu-west-1": (None, "eu_")}


def test_regions_prefix_is_validated_like_table_prefix() -> None:
    # FEED_TABLE_PREFIX="bad prefix!" fails at start-up; the same prefix given per region
    # in FEED_REGIONS is accepted and only fails later, at the first DynamoDB call.
    with pytest.raises(SettingsError, match="FEED_REGIONS"):
        Settings.from_env({"FEED_REGIONS": "eu-west-1=http://a:1|bad prefix!"})


def test_cursor_secret_default_is_deterministic_per_tokens() -> None:
    a = Settings.from_env({"FEED_API_TOKENS": TOKENS}).cursor_secret
    assert a == Settings.from_env({"FEED_API_TOKENS": TOKENS}).cursor_secret
    # the order of the tokens does not matter: every API process derives the same secret
    swapped = "token-bbbb-2222,token-aaaa-1111"
    assert a == Settings.from_env({"FEED_API_TOKENS": swapped}).cursor_secret
    other = Settings.from_env({"FEED_API_TOKENS": "token-cccc-3333"}).cursor_secret
    none = Settings.from_env({}).cursor_secret
    assert len({a, other, none}) == 3
    assert re.fullmatch(r"[0-9a-f]{64}", a)
    assert "token-aaaa-1111" not in a


def test_explicit_cursor_secret_wins() -> None:
    secret = "a-very-long-cursor-secret"
    s = Settings.from_env({"FEED_API_TOKENS": TOKENS, "FEED_CURSOR_SECRET": secret})
    assert s.cursor_secret == secret


def test_replace_recomputes_cache_url_when_it_followed_redis_url() -> None:
    s = Settings.from_env({}).replace(redis_url="redis://other:1/0")
    assert s.cache_redis_url == "redis://other:1/0"
    separate = Settings(redis_url="redis://a:1/0", cache_redis_url="redis://b:1/0")
    assert separate.replace(redis_url="redis://c:1/0").cache_redis_url == "redis://b:1/0"


def test_replace_recomputes_default_cursor_secret_for_new_tokens() -> None:
    # replace() promises "derived defaults recomputed when not given", but the cursor
    # secret derived from the old tokens is copied over: a process that calls
    # replace(api_tokens=...) signs cursors with a different key than one built directly.
    base = Settings.from_env({"FEED_API_TOKENS": "token-aaaa-1111"})
    replaced = base.replace(api_tokens=("token-cccc-3333",))
    direct = Settings.from_env({"FEED_API_TOKENS": "token-cccc-3333"})
    assert replaced.cursor_secret == direct.cursor_secret


def test_celebrity_recent_items_tracks_backfill() -> None:
    assert Settings.from_env({}).celebrity_recent_items == 200
    assert Settings.from_env({"FEED_BACKFILL_ON_FOLLOW": "500"}).celebrity_recent_items == 500
    assert Settings.from_env({"FEED_BACKFILL_ON_FOLLOW": "10"}).celebrity_recent_items == 200


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.celebrity_followers = 1  # type: ignore[misc]


def test_auth_failures_per_minute() -> None:
    assert Settings.from_env({}).auth_failures_per_minute == 30
    assert Settings.from_env({"FEED_AUTH_FAILURES_PER_MINUTE": "0"}).auth_failures_per_minute == 0
    assert Settings.from_env(
        {"FEED_AUTH_FAILURES_PER_MINUTE": "120"}).auth_failures_per_minute == 120
    for bad in ("-1", "1.5", "many"):
        with pytest.raises(SettingsError, match="FEED_AUTH_FAILURES_PER_MINUTE"):
            Settings.from_env({"FEED_AUTH_FAILURES_PER_MINUTE": bad})


def test_pitr_defaults_to_aws_endpoints_only() -> None:
    unset = Settings.from_env({})
    assert unset.dynamodb_pitr is None
    assert unset.pitr_enabled(None) is True
    assert unset.pitr_enabled("http://127.0.0.1:8000") is False
    local = Settings.from_env({"FEED_DYNAMODB_ENDPOINT": "http://127.0.0.1:8000"})
    assert local.pitr_enabled(local.dynamodb_endpoint) is False


@pytest.mark.parametrize(("value", "wanted"), [("on", True), ("off", False)])
def test_pitr_setting_wins_over_the_endpoint(value: str, wanted: bool) -> None:
    s = Settings.from_env({"FEED_DYNAMODB_PITR": value})
    assert s.pitr_enabled(None) is wanted
    assert s.pitr_enabled("http://127.0.0.1:8000") is wanted


def test_the_realtime_and_queue_settings_have_their_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.notify_group_hours == 24
    assert settings.notify_ttl_days == 30
    assert settings.stream_max_per_process == 5_000
    assert settings.redis_sentinels == ()
    assert settings.redis_sentinel_master == ""
    assert settings.queue_min_replicas == 0


def test_sentinels_parse_host_port_pairs() -> None:
    settings = Settings.from_env({
        "FEED_REDIS_SENTINELS": "127.0.0.1:26379, sentinel-b:26380,[::1]:26381",
        "FEED_REDIS_SENTINEL_MASTER": "queue",
    })
    assert settings.redis_sentinels == (
        ("127.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381),
    )
    assert settings.redis_sentinel_master == "queue"


@pytest.mark.parametrize("raw", ["127.0.0.1", "host:0", "host:99999", ":26379", "a:b"])
def test_a_malformed_sentinel_list_names_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="FEED_REDIS_SENTINELS"):
        Settings.from_env({"FEED_REDIS_SENTINELS": raw, "FEED_REDIS_SENTINEL_MASTER": "q"})


@pytest.mark.parametrize("env", [
    {"FEED_REDIS_SENTINELS": "127.0.0.1:26379"},
    {"FEED_REDIS_SENTINEL_MASTER": "queue"},
])
def test_sentinels_and_their_master_go_together(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="go together"):
        Settings.from_env(env)
