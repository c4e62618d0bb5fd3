"""Every `tark` command: where it lives and its one-line help, and which exceptions are the user's errors.

Nothing here is imported until it runs (supervisor/cli/lazy.py). Adding a command: write it as a click
command in its own module and add a `LazyCommand` line here, with the first sentence of its help (a test
checks they match). Adding a user error: its "module:Name" in USER_ERRORS.
"""

from __future__ import annotations

from supervisor.cli.lazy import LazyCommand, LazyGroup

PLUGIN_COMMANDS = (
    LazyCommand("add", "supervisor.cli.plugin:add_command",
                "Install a plugin from a directory or git URL."),
    LazyCommand("approve", "supervisor.cli.plugin_consent:approve_command",
                "Approve ITEMs (default: all declared, pinning the files)."),
    LazyCommand("audit", "supervisor.cli.plugin_audit:audit_command",
                "Show the audit trail of capability and consent events."),
    LazyCommand("auth", "supervisor.cli.plugin_auth:plugin_auth_command",
                "Set a channel plugin's credentials (encrypted)."),
    LazyCommand("build", "supervisor.cli.plugin_dev:build_command",
                "Build the plugin in DIRECTORY (default .)."),
    LazyCommand("call", "supervisor.cli.call:call_command",
                "Call EXPORT of plugin NAME with string ARGS."),
    LazyCommand("disable", "supervisor.cli.plugin:disable_command", "Disable a plugin (it stays installed)."),
    LazyCommand("enable", "supervisor.cli.plugin:enable_command", "Enable a plugin."),
    LazyCommand("info", "supervisor.cli.plugin:info_command",
                "Show a plugin's manifest, source, hashes and limits."),
    LazyCommand("list", "supervisor.cli.plugin:list_command", "List installed plugins."),
    LazyCommand("new", "supervisor.cli.plugin_dev:new_command",
                "Create directory NAME with a plugin to start from."),
    LazyCommand("permissions", "supervisor.cli.plugin_consent:permissions_command",
                "Show each capability item: approved, admin, effective, why."),
    LazyCommand("remove", "supervisor.cli.plugin:remove_command", "Uninstall a plugin, its data/ directory included."),
    LazyCommand("revoke", "supervisor.cli.plugin_consent:revoke_command",
                "Revoke ITEMs (default: every approved item)."),
    LazyCommand("secret", "supervisor.cli.plugin_secret:secret_group",
                "Per-plugin secrets, read by plugins as env vars."),
    LazyCommand("status", "supervisor.cli.supervisor_cmd:plugin_status_command",
                "Show each plugin's worker in the daemon."),
    LazyCommand("update", "supervisor.cli.plugin:update_command",
                "Re-install a plugin from its recorded source."),
)

plugin_group = LazyGroup("plugin", help="Install and manage plugins.", lazy=PLUGIN_COMMANDS)

TOP_COMMANDS = (
    LazyCommand("auth", "supervisor.cli.auth:auth_group",
                "Sign in to providers (OAuth), show status, log out."),
    LazyCommand("channel", "supervisor.cli.channel:channel_group",
                "Run channel plugins (in the daemon) and send messages."),
    LazyCommand("completion", "supervisor.cli.completion:completion_command", "Print the completion script for SHELL."),
    LazyCommand("chat", "supervisor.cli.chat:chat_command", "Chat with a provider plugin."),
    LazyCommand("plugin", "supervisor.cli.commands:plugin_group", "Install and manage plugins."),
    LazyCommand("supervisor", "supervisor.cli.supervisor_cmd:supervisor_group",
                "The optional daemon every command uses while it runs."),
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
