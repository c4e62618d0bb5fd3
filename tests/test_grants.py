"""Effective grants and the admin policy, as pure functions (policy/grants.py, policy/admin_policy.py).

Effective = declared ∩ approved ∩ admin-allowed; every declared item that is missing says why."""

from __future__ import annotations

import pytest

from policy.admin_policy import AdminPolicy, AdminPolicyError, install_refusal, parse_admin_policy
from policy.errors import PatternError
from policy.grants import (
    Approval,
    EnvAccess,
    FsReadAccess,
    HttpAccess,
    ShellAccess,
    StorageAccess,
    carried_over,
    declared_items,
    diff_items,
    normalize_item,
    resolve_grants,
    sensitive_path_refusal,
)
from policy.limits import resolve_limits
from policy.manifest import Capabilities
from policy.patterns import parse_url_target

HOME = "/home/u"
CAPS = Capabilities(storage=True, http=("API.example.com", "*.cdn.example.com", "http://127.0.0.1:8080"),
                    env=("APP_*", "TOKEN"), fs_read=("~/creds/*.json", "/etc/app"), shell=True)
ALL = frozenset(declared_items(CAPS))


def grants(approval: Approval | None = Approval("m", "w", ALL), policy: AdminPolicy = AdminPolicy(),
           caps: Capabilities = CAPS):
    return resolve_grants("demo", caps, approval, policy, home=HOME)


def policy(text: str) -> AdminPolicy:
    return parse_admin_policy(text, "/etc/tark/policy.toml")


# ------------------------------------------------------------------------------------------------ items


def test_items_are_named_by_kind_and_normalised_pattern() -> None:
    assert declared_items(CAPS) == ("storage", "http:api.example.com", "http:*.cdn.example.com",
                                    "http:http://127.0.0.1:8080", "env:APP_*", "env:TOKEN",
                                    "fs_read:~/creds/*.json", "fs_read:/etc/app", "shell")
    assert normalize_item("http:API.Example.com") == "http:api.example.com"
    for bad in ("http", "http:", "net:x", "env:*", "fs_read:relative", "storage:x"):
        with pytest.raises(PatternError):
            normalize_item(bad)


def test_declared_and_approved_is_granted() -> None:
    g = grants()
    assert all(s.effective for s in g.items)
    assert g.check(StorageAccess()).allowed and g.check(ShellAccess("ls")).allowed
    assert g.check(HttpAccess("https://api.example.com/x")).pattern == "api.example.com"
    assert g.check(EnvAccess("APP_KEY")).allowed
    assert g.check(FsReadAccess("/home/u/creds/a.json", HOME)).allowed


def test_no_approval_record_grants_nothing_and_says_how_to_approve() -> None:
    g = grants(approval=None)
    assert not any(s.effective for s in g.items)
    decision = g.check(HttpAccess("https://api.example.com/"))
    assert not decision.allowed and "tark plugin approve demo" in decision.reason
    assert not g.check(StorageAccess()).allowed


def test_each_item_is_approved_on_its_own() -> None:
    g = grants(Approval("m", "w", frozenset({"http:api.example.com"}), revoked=frozenset({"env:TOKEN"}),
                        pending=frozenset({"env:APP_*"})))
    assert g.check(HttpAccess("https://api.example.com/")).allowed
    assert not g.check(HttpAccess("https://x.cdn.example.com/")).allowed
    assert "revoked" in g.check(EnvAccess("TOKEN")).reason
    pending = g.check(EnvAccess("APP_X")).reason
    assert "pending approval" in pending and "tark plugin approve demo env:APP_*" in pending
    assert not g.check(StorageAccess()).allowed


def test_an_update_keeps_unchanged_items_and_leaves_new_or_widened_ones_pending() -> None:
    before = Approval("m1", "w1", frozenset({"http:api.example.com", "storage"}))
    after = carried_over(before, ("storage", "http:*.example.com", "env:KEY"), "m2", "w2")
    assert after == Approval("m2", "w2", frozenset({"storage"}), frozenset({"http:*.example.com", "env:KEY"}))
    diff = diff_items(("storage", "http:api.example.com"), ("storage", "http:*.example.com", "env:KEY"))
    assert diff.added == ("http:*.example.com", "env:KEY") and diff.removed == ("http:api.example.com",)


# ------------------------------------------------------------------------------------------------ admin policy


def test_admin_deny_beats_an_approval() -> None:
    g = grants(policy=policy('[deny]\nhttp = ["*.example.com"]\nenv = ["TOKEN"]\nshell = true\n'))
    status = {s.item: s for s in g.items}
    assert status["http:api.example.com"].admin == "denied" and not status["http:api.example.com"].effective
    assert "[deny] http entry '*.example.com'" in status["http:api.example.com"].why
    assert not g.check(HttpAccess("https://api.example.com/")).allowed
    assert not g.check(EnvAccess("TOKEN")).allowed and g.check(EnvAccess("APP_X")).allowed
    assert not g.check(ShellAccess()).allowed and status["shell"].admin == "denied"
    assert g.check(HttpAccess("http://127.0.0.1:8080/")).allowed


def test_a_deny_inside_a_wider_grant_narrows_it_at_request_time() -> None:
    g = grants(policy=policy('[deny]\nenv = ["APP_SECRET"]\nfs_read = ["/etc/app/private"]\n'))
    assert {s.item: s.admin for s in g.items}["env:APP_*"] == "narrowed"
    assert g.check(EnvAccess("APP_KEY")).allowed and not g.check(EnvAccess("APP_SECRET")).allowed
    assert g.check(FsReadAccess("/etc/app/ok.conf", HOME)).allowed
    assert not g.check(FsReadAccess("/etc/app/private/key", HOME)).allowed


def test_allow_lists_bound_what_any_plugin_gets() -> None:
    g = grants(policy=policy('[allow]\nhttp = ["*.example.com"]\nenv = []\nstorage = false\n'))
    status = {s.item: s for s in g.items}
    assert status["http:api.example.com"].effective
    assert status["http:http://127.0.0.1:8080"].admin == "outside-allow"
    assert not g.check(HttpAccess("http://127.0.0.1:8080/")).allowed
    assert status["env:TOKEN"].admin == "outside-allow" and not g.check(EnvAccess("TOKEN")).allowed
    assert not g.check(StorageAccess()).allowed
    assert status["fs_read:/etc/app"].effective  # no fs_read list: not bounded


def test_admin_only_approvals_ignore_the_users_and_follow_allow() -> None:
    admin_only = policy('[install]\napprovals = "admin-only"\n[allow]\nhttp = ["api.example.com"]\nstorage = true\n')
    g = grants(Approval("m", "w", ALL), admin_only)
    assert [s.item for s in g.items if s.effective] == ["storage", "http:api.example.com"]
    assert "admin-only" in g.check(EnvAccess("TOKEN")).reason


@pytest.mark.parametrize("text, key", [
    ("[deny]\nhttp = ['*']\n", "deny.http"),
    ("[deny]\nhtp = []\n", "deny.htp"),
    ("[deny]\nshell = 'yes'\n", "deny.shell"),
    ("[install]\napprovals = 'anyone'\n", "install.approvals"),
    ("[install.pinned]\necho = 'abc'\n", "install.pinned.echo"),
    ("[limits]\ncpu = 3\n", "limits.cpu"),
    ("[limits.plugins.echo]\nstorage_quota_bytes = -1\n", "limits.plugins.echo.storage_quota_bytes"),
    ("[lockdown]\nrequire = ['selinux']\n", "lockdown.require"),
    ("[alow]\n", "alow"),
    ("not toml", ""),
])
def test_a_malformed_policy_is_refused_naming_the_key(text: str, key: str) -> None:
    with pytest.raises(AdminPolicyError) as error:
        policy(text)
    assert error.value.key == key and str(error.value).startswith("/etc/tark/policy.toml: ")


def test_policy_limits_install_and_lockdown() -> None:
    p = policy("[limits]\nstorage_quota_bytes = 1048576\n[limits.plugins.echo]\nstorage_quota_bytes = 4096\n"
               "http_total_timeout_s = 5\n[install]\nlocal = false\ngit_hosts = ['GitHub.com']\n"
               f"[install.pinned]\necho = '{'a' * 64}'\n[lockdown]\nrequire = ['seccomp', 'landlock']\n")
    assert p.limit_defaults == {"storage_quota_bytes": 1048576}
    resolved = resolve_limits(admin=p.limit_defaults, per_plugin=p.limit_plugins["echo"])
    assert (resolved.limits.storage_quota_bytes, resolved.limits.http_total_timeout_s) == (4096, 5)
    assert resolved.sources["storage_quota_bytes"] == "admin policy, per plugin"
    assert p.required_layers == ("seccomp", "landlock")
    assert "local directories" in install_refusal(p, name="x", git_host=None, wasm_sha256="b" * 64)
    assert "github.com" in install_refusal(p, name="x", git_host="evil.org", wasm_sha256="b" * 64)
    assert install_refusal(p, name="x", git_host="github.com", wasm_sha256="b" * 64) is None
    assert "pins plugin 'echo'" in install_refusal(p, name="echo", git_host="github.com", wasm_sha256="b" * 64)
    assert install_refusal(p, name="echo", git_host="github.com", wasm_sha256="a" * 64) is None


# ------------------------------------------------------------------------------------------------ holes


def test_proc_sys_dev_are_never_readable_through_a_manifest() -> None:
    """Attacker: fs_read = ["/proc/self/environ"] to read the supervisor's environment (its secrets)."""
    hostile = Capabilities(fs_read=("/proc/self/environ", "/proc", "/sys/kernel", "/dev/mem"))
    g = grants(Approval("m", "w", frozenset(declared_items(hostile))), caps=hostile)
    for path in ("/proc/4242/environ", "/proc/self/environ", "/sys/kernel/notes", "/dev/mem", "/proc"):
        decision = g.check(FsReadAccess(path, HOME))
        assert not decision.allowed and "never readable" in decision.reason, path


def test_only_an_admin_entry_under_the_root_opens_a_sensitive_path() -> None:
    assert sensitive_path_refusal("/proc/cpuinfo", ["/proc/cpuinfo"]) is None
    assert sensitive_path_refusal("/proc/1/environ", ["/proc/cpuinfo"]) is not None
    assert sensitive_path_refusal("/proc/cpuinfo", ["/"]) is not None  # a broad admin entry is not naming it
    assert sensitive_path_refusal("/procfs/x", []) is None
    caps = Capabilities(fs_read=("/proc/cpuinfo",))
    approved = Approval("m", "w", frozenset(declared_items(caps)))
    assert not grants(approved, caps=caps).check(FsReadAccess("/proc/cpuinfo", HOME)).allowed
    opened = grants(approved, policy('[allow]\nfs_read = ["/proc/cpuinfo"]\n'), caps)
    assert opened.check(FsReadAccess("/proc/cpuinfo", HOME)).allowed


def test_private_paths_refused_except_the_plugins_own_credentials_file() -> None:
    caps = Capabilities(fs_read=("~/.config/tark/chatgpt_oauth.json", "~/.config/tark/other_oauth.json"))
    g = grants(Approval("m", "w", frozenset(declared_items(caps))), caps=caps)
    own = "/home/u/.config/tark/chatgpt_oauth.json"
    private = ("/home/u/.config/tark",)
    assert g.check(FsReadAccess(own, HOME, private=private, own_credentials=own)).allowed
    other = g.check(FsReadAccess("/home/u/.config/tark/other_oauth.json", HOME, private=private,
                                 own_credentials=own))
    assert not other.allowed and "never readable" in other.reason
    assert not g.check(FsReadAccess(own, HOME, private=private, own_credentials=None)).allowed


def test_idna_the_checked_name_is_the_name_connected_to() -> None:
    """Attacker: pattern fass.de, request https://faß.de/ (IDNA 2003 folds it to fass.de, httpx sends it to
    xn--fa-hia.de, another domain)."""
    caps = Capabilities(http=("fass.de",))
    g = grants(Approval("m", "w", frozenset(declared_items(caps))), caps=caps)
    assert g.check(HttpAccess("https://fass.de/")).allowed
    assert not g.check(HttpAccess("https://faß.de/")).allowed
    target = parse_url_target("https://Faß.de:443/p?q#f")
    assert target.host == "xn--fa-hia.de" and target.url == "https://xn--fa-hia.de:443/p?q#f"
    unicode_pattern = Capabilities(http=("faß.de",))
    g2 = grants(Approval("m", "w", frozenset(declared_items(unicode_pattern))), caps=unicode_pattern)
    assert g2.check(HttpAccess("https://xn--fa-hia.de/")).allowed and not g2.check(HttpAccess("https://fass.de/")).allowed


def test_ws_scheme_follows_the_http_family() -> None:
    caps = Capabilities(http=("gw.example.com", "http://local.example.com"))
    g = grants(Approval("m", "w", frozenset(declared_items(caps))), caps=caps)
    assert g.check(HttpAccess("wss://gw.example.com/")).allowed
    assert not g.check(HttpAccess("ws://gw.example.com/")).allowed
    assert g.check(HttpAccess("ws://local.example.com/")).allowed


def test_a_broken_policy_refuses_everything() -> None:
    from policy.grants import refused_grants
    g = refused_grants("demo", CAPS, "the admin policy is broken")
    assert not any(s.effective for s in g.items)
    assert g.check(StorageAccess()).reason == "the admin policy is broken"


def test_the_commented_example_policy_parses() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "ops" / "policy.example.toml"
    parsed = parse_admin_policy(example.read_text(), str(example))
    assert parsed.deny.shell is True and parsed.install.git_hosts == ("github.com",)
