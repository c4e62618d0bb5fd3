"""Every `tark` command: where it lives and its one-line help, and which exceptions are the user's errors.

Nothing here is imported until it runs (supervisor/cli/lazy.py). Adding a command: write it as a click
command in its own module and add a `LazyCommand` line here, with the first sentence of its help (a test
checks they match). Adding a user error: its "module:Name" in USER_ERRORS.
"""

from __future__ import annotations

from supervisor.cli.lazy import LazyCommand, LazyGroup

PLUGIN_COMMANDS = (
    LazyCommand("add", "supervisor.cli.plugin:add_command",
                "Install a plugin from a directory or a git URL, asking to approve each capability it declares."),
    LazyCommand("approve", "supervisor.cli.plugin_consent:approve_command",
                "Approve ITEMs (default: every declared item, and pin the plugin's current files)."),
    LazyCommand("audit", "supervisor.cli.plugin_audit:audit_command",
                "Show the audit trail: capability decisions, approvals, revocations and integrity events."),
    LazyCommand("auth", "supervisor.cli.plugin_auth:plugin_auth_command",
                "Set a channel plugin's credentials (encrypted)."),
    LazyCommand("build", "supervisor.cli.plugin_dev:build_command",
                "Build the plugin in DIRECTORY (default .) into the wasm its plugin.toml names."),
    LazyCommand("call", "supervisor.cli.call:call_command",
                "Call EXPORT of plugin NAME with string ARGS (tark's alloc convention) and print the result."),
    LazyCommand("disable", "supervisor.cli.plugin:disable_command", "Disable a plugin (it stays installed)."),
    LazyCommand("enable", "supervisor.cli.plugin:enable_command", "Enable a plugin."),
    LazyCommand("info", "supervisor.cli.plugin:info_command",
                "Show a plugin's manifest, capabilities, paths, source and hashes."),
    LazyCommand("list", "supervisor.cli.plugin:list_command", "List installed plugins."),
    LazyCommand("new", "supervisor.cli.plugin_dev:new_command",
                "Create directory NAME with a plugin to start from: plugin.toml, wit/tark.wit and the source."),
    LazyCommand("permissions", "supervisor.cli.plugin_consent:permissions_command",
                "Show each declared capability item: approved, admin policy, effective, and why."),
    LazyCommand("remove", "supervisor.cli.plugin:remove_command", "Uninstall a plugin, its data/ directory included."),
    LazyCommand("revoke", "supervisor.cli.plugin_consent:revoke_command",
                "Revoke ITEMs (default: every approved item)."),
    LazyCommand("secret", "supervisor.cli.plugin_secret:secret_group",
                "Per-plugin secrets, read by the plugin as environment variables it declares."),
    LazyCommand("status", "supervisor.cli.supervisor_cmd:plugin_status_command",
                "Each plugin's worker in the daemon: state, uptime, memory, CPU, calls, host calls by capability, "
                "denials, restarts, last error (a timeout shows as a timeout), lock-down steps not applied, and "
                "why it is parked."),
    LazyCommand("update", "supervisor.cli.plugin:update_command",
                "Re-install a plugin from its recorded source (keeps data/, enabled state and installed_at)."),
)

plugin_group = LazyGroup("plugin", help="Install and manage plugins.", lazy=PLUGIN_COMMANDS)

TOP_COMMANDS = (
    LazyCommand("auth", "supervisor.cli.auth:auth_group",
                "Sign in to a plugin provider with OAuth (PKCE or device flow), show status, or log out."),
    LazyCommand("channel", "supervisor.cli.channel:channel_group",
                "Run channel plugins: poll loops and webhooks in the supervisor daemon, and sending messages."),
    LazyCommand("chat", "supervisor.cli.chat:chat_command", "Chat with a provider plugin."),
    LazyCommand("plugin", "supervisor.cli.commands:plugin_group", "Install and manage plugins."),
    LazyCommand("supervisor", "supervisor.cli.supervisor_cmd:supervisor_group",
                "Run the supervisor as a daemon that every tark command uses while it runs."),
    LazyCommand("tool", "supervisor.cli.tool:tool_group", "Tools of the installed tool plugins."),
)

# Exceptions that print `Error: <message>` and exit 1 instead of an internal error. Named, not imported: a type
# whose module was never imported cannot have been raised (cli/main.py resolves them from sys.modules).
USER_ERRORS = (
    "policy.errors:PolicyError",
    "policy.tools:ToolArgsError",
    "policy.channel_settings:SettingsError",
    "supervisor.envelope:EnvelopeError",
    "supervisor.call_api:CallRefused",
    "supervisor.control_client:ControlError",
    "supervisor.credentials:CredentialsError",
    "supervisor.install_record:InstallRecordError",
    "supervisor.logging_setup:LogFilterError",
    "supervisor.plugin:PluginLoadError",
    "supervisor.registry:RegistryError",
    "supervisor.sources:SourceError",
    "supervisor.wasm_check:WasmValidationError",
    "supervisor.secrets:SecretError",
    "supervisor.tools:ToolError",
    "supervisor.chat.types:ChatError",
    "supervisor.channels.operations:ChannelError",
    "supervisor.channels.messages:ChannelDataError",
    "supervisor.daemon:DaemonError",
    "supervisor.channels.webhook:WebhookListenError",
    "supervisor.oauth.errors:OAuthError",
    "supervisor.oauth.targets:UnknownProvider",
    "supervisor.plugin_scaffold:ScaffoldError",
    "supervisor.plugin_build:BuildError",
)
