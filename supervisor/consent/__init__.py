"""Consent and control on the supervisor side: the approvals store, the admin policy file, artifact pins and the
live effective grants each plugin's host asks (docs/permissions.md)."""
