"""OAuth sign-in for plugins with an `[oauth]` manifest section (tark-core-abi.md §4): PKCE and device flow.

The supervisor side runs the flow and talks to the authorization server; the plugin only sees the result,
through its `auth_process_tokens` and `provider_auth_init` exports, in its own worker.
"""
