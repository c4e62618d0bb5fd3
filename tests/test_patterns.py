"""Capability pattern matching: the semantics of design.md, fixing tark's matchers (ABI §7, items 13-17)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy.errors import PatternError
from policy.patterns import (
    UrlRejected,
    env_allows,
    fs_allows,
    matching_http_pattern,
    parse_env_pattern,
    parse_fs_pattern,
    parse_http_pattern,
)


def allowed(patterns: list[str], url: str) -> bool:
    return matching_http_pattern([parse_http_pattern(p) for p in patterns], url) is not None


@pytest.mark.parametrize(
    ("patterns", "url", "expected"),
    [
        (["api.example.com"], "https://api.example.com/v1", True),
        (["api.example.com"], "https://API.Example.COM./v1", True),
        (["example.com"], "https://api.example.com/", False),  # a bare host admits only itself
        (["*.example.com"], "https://api.example.com/", True),  # tark: *.x never matched
        (["*.example.com"], "https://a.b.example.com/", True),
        (["*.example.com"], "https://example.com/", False),  # not the apex
        (["*.example.com"], "https://badexample.com/", False),
        (["api.example.com"], "http://api.example.com/", False),  # bare host = https only
        (["api.example.com"], "https://api.example.com:8443/", False),  # bare host = port 443 only
        (["api.example.com"], "wss://api.example.com/socket", True),
        (["https://api.example.com:8443"], "https://api.example.com:8443/", True),
        (["http://127.0.0.1:8080"], "http://127.0.0.1:8080/x", True),
        (["http://127.0.0.1:8080"], "http://127.0.0.1:8081/x", False),
        (["http://127.0.0.1:8080"], "ws://127.0.0.1:8080/x", True),
        (["http://127.0.0.1"], "http://127.0.0.1/", True),
        (["[::1]"], "https://[::1]/", True),
        (["bücher.example"], "https://xn--bcher-kva.example/", True),
        ([], "https://api.example.com/", False),
    ],
)
def test_http_matching(patterns, url, expected):
    assert allowed(patterns, url) is expected


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com@evil.com/",
        "https://user:pw@api.example.com/",
        "file:///etc/passwd",
        "https:///nohost",
        "https://api.example.com:99999/",
        "not a url",
    ],
)
def test_urls_with_userinfo_odd_schemes_or_garbage_are_rejected(url):
    with pytest.raises(UrlRejected):
        allowed(["api.example.com"], url)


def test_literal_address_patterns_are_flagged_for_private_access():
    assert parse_http_pattern("http://127.0.0.1:80").names_address_literally
    assert parse_http_pattern("localhost").names_address_literally
    assert not parse_http_pattern("api.example.com").names_address_literally
    assert not parse_http_pattern("*.example.com").names_address_literally


@pytest.mark.parametrize("bad", ["*", "*.*", "**", "*:443", "*.com", "*.127.0.0.1", "a.*.com", "http://", "[::1"])
def test_too_broad_or_malformed_http_patterns_are_refused(bad):
    with pytest.raises(PatternError):
        parse_http_pattern(bad)


def test_env_exact_and_prefix():
    patterns = [parse_env_pattern("API_KEY"), parse_env_pattern("GEMINI_*")]
    assert env_allows(patterns, "API_KEY")
    assert not env_allows(patterns, "API_KEY2")
    assert env_allows(patterns, "GEMINI_API_KEY")  # tark: PREFIX_* never matched
    assert not env_allows(patterns, "GEMINI")
    assert not env_allows(patterns, "HOME")


@pytest.mark.parametrize("bad", ["*", "**", "", "A-B", "A*B", "9X"])
def test_bad_env_patterns(bad):
    with pytest.raises(PatternError):
        parse_env_pattern(bad)


def test_fs_plain_entries_admit_themselves_and_below():
    patterns = [parse_fs_pattern("~/.config/app").expanded("/home/u")]
    assert fs_allows(patterns, "/home/u/.config/app")
    assert fs_allows(patterns, "/home/u/.config/app/creds.json")
    assert not fs_allows(patterns, "/home/u/.config/application")  # component prefix, not string prefix
    assert not fs_allows(patterns, "/home/u/.config")
    assert not fs_allows(patterns, "relative/path")


def test_fs_globs_escape_metacharacters():
    star = [parse_fs_pattern("/etc/app/*.conf").expanded("/h")]
    assert fs_allows(star, "/etc/app/a.conf")
    assert not fs_allows(star, "/etc/app/sub/a.conf")
    assert not fs_allows(star, "/etc/app/aXconf")  # '.' is literal (tark left it raw)
    deep = [parse_fs_pattern("/srv/data/**").expanded("/h")]
    assert fs_allows(deep, "/srv/data/a/b/c.txt")
    assert not fs_allows(deep, "/srv/database")


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40))
def test_http_pattern_parser_never_crashes(text):
    try:
        pattern = parse_http_pattern(text)
    except PatternError:
        return
    assert pattern.host and "*" not in pattern.host


@given(st.text(max_size=60))
def test_url_matching_never_crashes(url):
    try:
        allowed(["api.example.com", "*.example.org", "http://127.0.0.1:8080"], url)
    except UrlRejected:
        pass
