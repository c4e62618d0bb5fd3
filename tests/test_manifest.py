"""plugin.toml: every field tark reads, every validation rule with a bad manifest each."""

from __future__ import annotations

import pytest

from policy.errors import ManifestError, ManifestParseError
from policy.manifest import PluginType, parse_manifest
from policy.version import COMPATIBLE_TARK_VERSION

MINIMAL = """
[plugin]
name = "my-plugin"
version = "1.0.0"
type = "tool"
"""


def manifest_with(plugin_lines: str = "", rest: str = "") -> str:
    base = {"name": '"my-plugin"', "version": '"1.0.0"', "type": '"tool"'}
    extra = []
    for line in plugin_lines.strip().splitlines():
        key, _, value = line.partition("=")
        key = key.strip()
        if key in base:
            base[key] = value.strip()
        else:
            extra.append(line)
    plugin = "\n".join(f"{k} = {v}" for k, v in base.items() if v != "DROP")
    return "[plugin]\n" + plugin + "\n" + "\n".join(extra) + "\n" + rest


def rejected(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "/plugins/x/plugin.toml")
    return info.value


def test_minimal_manifest_gets_tark_defaults():
    manifest = parse_manifest(MINIMAL).manifest
    assert manifest.name == "my-plugin"
    assert manifest.plugin_type is PluginType.TOOL
    assert manifest.plugin.api_version == "0.1"
    assert manifest.plugin.wasm == "plugin.wasm"
    assert manifest.plugin.description == manifest.plugin.author == ""
    assert manifest.capabilities.storage is False
    assert manifest.capabilities.http == () and manifest.capabilities.env == ()
    assert manifest.oauth is None


def test_full_manifest_reads_every_section():
    text = manifest_with(
        'type = "provider"\ndescription = "Gemini"\nauthor = "A"\nhomepage = "https://h"\nlicense = "MIT"\n'
        'min_tark_version = "0.5.0"\napi_version = "0.1"\nwasm = "dist/plugin.wasm"',
        """
[capabilities]
storage = true
http = ["oauth2.googleapis.com", "*.googleapis.com", "http://127.0.0.1:8080"]
env = ["GOOGLE_CLOUD_PROJECT", "GEMINI_*"]
fs_read = ["~/.gemini/oauth_creds.json", "/etc/app/*.conf"]
shell = false

[contributes]
providers = [{ id = "gemini", name = "Gemini", base_provider = "google" }]
channels = [{ id = "chat", name = "Chat" }]
commands = [{ id = "x", title = "X" }]
configuration = [{ key = "k", type = "string", default = "d" }]

[activation]
events = ["onStartup"]

[config]
anything = { nested = 1 }

[oauth]
flow = "pkce"
auth_url = "https://accounts.example.com/auth"
token_url = "https://accounts.example.com/token"
client_id = "${CLIENT_ID}"
scopes = ["openid", "${EXTRA_SCOPE}"]
redirect_uri = "http://localhost:8085/callback"
extra_params = { access_type = "offline" }
""",
    )
    parsed = parse_manifest(text)
    m = parsed.manifest
    assert parsed.warnings == ()
    assert m.plugin.wasm == "dist/plugin.wasm"
    assert m.capabilities.http[1] == "*.googleapis.com"
    assert str(m.capabilities.env_patterns[1]) == "GEMINI_*"
    assert m.contributes.providers[0].base_provider == "google"
    assert m.contributes.channels[0].description == ""
    assert m.activation.events == ("onStartup",)
    assert m.config["anything"] == {"nested": 1}
    assert m.oauth.use_state is True and m.oauth.extra_params == {"access_type": "offline"}


def test_oauth_placeholders_expand_only_at_use_time():
    text = manifest_with(rest="""
[oauth]
flow = "pkce"
auth_url = "https://a/auth"
token_url = "https://a/token"
client_id = "${CLIENT_ID}"
client_secret = "${CLIENT_SECRET}"
scopes = ["${SCOPE}"]
redirect_uri = "http://localhost:8085/cb"
""")
    oauth = parse_manifest(text).manifest.oauth
    assert oauth.client_id == "${CLIENT_ID}"  # the parsed manifest never holds the secret
    expanded = oauth.expanded({"CLIENT_ID": "abc", "SCOPE": "openid"})
    assert expanded.client_id == "abc" and expanded.scopes == ("openid",)
    assert expanded.client_secret == "${CLIENT_SECRET}"  # unset stays literal, as in tark
    assert expanded.unresolved_fields() == ["client_secret"]


def test_unknown_keys_are_ignored_with_a_warning_naming_each():
    parsed = parse_manifest(manifest_with('verison = "1"', "[capabilties]\nhttp = []\n[capabilities]\nhtpp = []\n"))
    assert any("'plugin.verison'" in w for w in parsed.warnings)
    assert any("'capabilties'" in w for w in parsed.warnings)
    assert any("'capabilities.htpp'" in w for w in parsed.warnings)


def test_shell_is_accepted_with_a_warning():
    parsed = parse_manifest(manifest_with(rest="[capabilities]\nshell = true\n"))
    assert parsed.manifest.capabilities.shell is True
    assert any("shell" in w and "dangerous" in w for w in parsed.warnings)


def test_bad_toml_says_failed_to_parse_plugin_toml():
    error = rejected("[plugin\nname = 'x'")
    assert isinstance(error, ManifestParseError)
    assert "Failed to parse plugin.toml" in str(error)
    assert "/plugins/x/plugin.toml" in str(error)
    assert "line 1" in str(error)


def test_non_utf8_manifest_is_a_parse_error():
    with pytest.raises(ManifestParseError, match="not valid UTF-8"):
        parse_manifest(b"[plugin]\nname = \"\xff\"\n", "p.toml")


def test_oversized_manifest_is_rejected():
    error = rejected(MINIMAL + "# " + "x" * 70_000)
    assert "limit" in str(error)


@pytest.mark.parametrize(
    ("plugin_lines", "rest", "key", "message"),
    [
        ("name = DROP", "", "plugin.name", "Plugin name is required"),
        ('name = ""', "", "plugin.name", "Plugin name is required"),
        ("version = DROP", "", "plugin.version", "Plugin version is required"),
        ("type = DROP", "", "plugin.type", "Plugin type is required"),
        ('version = "1.0"', "", "plugin.version", "Plugin version must be valid semver: 1.0"),
        ('version = "v1.0.0"', "", "plugin.version", "Plugin version must be valid semver: v1.0.0"),
        ('version = "01.0.0"', "", "plugin.version", "valid semver"),
        ('name = "My_Plugin"', "", "plugin.name", "lowercase"),
        ('name = "my plugin"', "", "plugin.name", "lowercase"),
        ('name = "-lead"', "", "plugin.name", "lowercase"),
        ('name = "a--b"', "", "plugin.name", "lowercase"),
        (f'name = "{"a" * 65}"', "", "plugin.name", "at most 64"),
        ('name = "plügin"', "", "plugin.name", "lowercase"),
        ('type = "widget"', "", "plugin.type", "Plugin type must be one of auth, tool, provider, channel, hook"),
        ("name = 5", "", "plugin.name", "expected a string, got an integer"),
        ('min_tark_version = "99.0.0"', "", "plugin.min_tark_version",
         f"Plugin requires tark >= 99.0.0, but current version is {COMPATIBLE_TARK_VERSION}"),
        ('min_tark_version = "latest"', "", "plugin.min_tark_version", "must be valid semver"),
        ('api_version = "9.9"', "", "plugin.api_version", "not supported"),
        ('wasm = "/etc/passwd"', "", "plugin.wasm", "relative"),
        ('wasm = "../other/plugin.wasm"', "", "plugin.wasm", "escapes"),
        ('wasm = "dist/../../x.wasm"', "", "plugin.wasm", "escapes"),
        ('wasm = "~/x.wasm"', "", "plugin.wasm", "relative"),
        ('wasm = ""', "", "plugin.wasm", "invalid wasm path"),
        (f'description = "{"d" * 5000}"', "", "plugin.description", "longer than"),
        ("", "[capabilities]\nstorage = \"yes\"", "capabilities.storage", "expected a boolean"),
        ("", "[capabilities]\nhttp = \"api.example.com\"", "capabilities.http", "expected an array"),
        ("", "[capabilities]\nhttp = [\"*\"]", "capabilities.http[0]", "allows every host"),
        ("", "[capabilities]\nhttp = [\"a.com\", \"*.com\"]", "capabilities.http[1]", "top-level domain"),
        ("", "[capabilities]\nhttp = [\"api.*.com\"]", "capabilities.http[0]", "leading '*.'"),
        ("", "[capabilities]\nhttp = [\"ftp://a.com\"]", "capabilities.http[0]", "scheme 'ftp'"),
        ("", "[capabilities]\nhttp = [\"https://a.com/v1/path\"]", "capabilities.http[0]", "not a path"),
        ("", "[capabilities]\nhttp = [\"user@a.com\"]", "capabilities.http[0]", "user info"),
        ("", "[capabilities]\nhttp = [\"a.com:99999\"]", "capabilities.http[0]", "port"),
        ("", "[capabilities]\nhttp = [\"bad_host!.com\"]", "capabilities.http[0]", "invalid host"),
        ("", "[capabilities]\nhttp = [\"\"]", "capabilities.http[0]", "empty"),
        ("", "[capabilities]\nenv = [\"*\"]", "capabilities.env[0]", "whole environment"),
        ("", "[capabilities]\nenv = [\"A*B\"]", "capabilities.env[0]", "only allowed at the end"),
        ("", "[capabilities]\nenv = [\"1ABC\"]", "capabilities.env[0]", "not a variable name"),
        ("", "[capabilities]\nenv = [\"OK\", 3]", "capabilities.env[1]", "expected a string"),
        ("", "[capabilities]\nfs_read = [\"./data\"]", "capabilities.fs_read[0]", "not absolute"),
        ("", "[capabilities]\nfs_read = [\"/**\"]", "capabilities.fs_read[0]", "whole file system"),
        ("", "[capabilities]\nfs_read = [\"~/*\"]", "capabilities.fs_read[0]", "whole file system"),
        ("", "[capabilities]\nfs_read = [\"/etc/../root\"]", "capabilities.fs_read[0]", "'..'"),
        ("", "[capabilities]\nfs_read = [\"/etc/[ab]\"]", "capabilities.fs_read[0]", "globs"),
        ("", "[capabilities]\nhttp = [" + ", ".join(f'"h{i}.com"' for i in range(65)) + "]",
         "capabilities.http", "at most 64"),
        ("", "[contributes]\nproviders = [{ name = \"x\" }]", "contributes.providers[0].id", "required"),
        ("", "[contributes]\nproviders = [{ id = \"\", name = \"x\" }]", "contributes.providers[0].id", "1 to 64"),
        ("", "[oauth]\nflow = \"pkce\"", "oauth.auth_url", "required"),
        ("", "[oauth]\nflow = \"implicit\"\nauth_url = \"https://a\"\ntoken_url = \"https://a\"\nclient_id = \"c\"\n"
             "scopes = [\"s\"]\nredirect_uri = \"http://localhost:1/cb\"", "oauth.flow", "unknown OAuth flow"),
        ("", "[oauth]\nflow = \"pkce\"\nauth_url = \"javascript:x\"\ntoken_url = \"https://a\"\nclient_id = \"c\"\n"
             "scopes = [\"s\"]\nredirect_uri = \"http://localhost:1/cb\"", "oauth.auth_url", "not an http(s) URL"),
        ("", "[oauth]\nflow = \"pkce\"\nauth_url = \"https://a\"\ntoken_url = \"https://a\"\nclient_id = \"c\"\n"
             "scopes = []\nredirect_uri = \"http://localhost:1/cb\"", "oauth.scopes", "at least one scope"),
        ("", "[oauth]\nflow = \"pkce\"\nauth_url = \"https://a\"\ntoken_url = \"https://a\"\nclient_id = \"c\"\n"
             "scopes = [\"s\"]\nredirect_uri = \"http://localhost:1/cb\"\nextra_params = { a = 1 }",
         "oauth.extra_params", "table of strings"),
    ],
)
def test_each_rule_rejects_a_bad_manifest_naming_file_key_and_fix(plugin_lines, rest, key, message):
    error = rejected(manifest_with(plugin_lines, rest))
    assert error.key == key
    assert message in str(error)
    assert str(error).startswith("/plugins/x/plugin.toml: ")
    assert error.fix, "every error tells the user how to fix it"


def test_missing_plugin_table():
    error = rejected("[capabilities]\nstorage = true\n")
    assert error.key == "plugin" and "[plugin] table is missing" in str(error)


@pytest.mark.parametrize("version", ["1.0.0", "0.2.3-beta.1", "1.0.0+build.5", "1.0.0-rc.1+meta"])
def test_semver_with_prerelease_and_build_is_accepted(version):
    assert parse_manifest(manifest_with(f'version = "{version}"')).manifest.plugin.version == version


def test_min_tark_version_at_or_below_ours_is_accepted():
    parse_manifest(manifest_with(f'min_tark_version = "{COMPATIBLE_TARK_VERSION}"'))
    parse_manifest(manifest_with('min_tark_version = "0.5.0"'))
