"""The capability decision for what a manifest declares: `check(caps, request)`. Pure.

Host calls are decided by a plugin's effective grants (policy/grants.py: declared ∩ approved ∩ admin policy).
`check` here answers the narrower question "does the manifest declare this?", for code that only needs that
(a warning when setting a secret no env entry names, the chat endpoint a manifest declares).
"""

from __future__ import annotations

from policy.grants import (  # noqa: F401 - the request and decision types are used through this module too
    CapabilityRequest,
    Decision,
    EnvAccess,
    FsReadAccess,
    HttpAccess,
    ShellAccess,
    StorageAccess,
    declared_only,
    refused_address_reason,
)
from policy.manifest import Capabilities


def check(caps: Capabilities, request: CapabilityRequest) -> Decision:
    """Decide `request` against the declared capabilities alone. Never raises for malformed targets."""
    return declared_only("", caps, home=getattr(request, "home", "/")).check(request)
