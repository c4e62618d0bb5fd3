"""{name}: a tark auth plugin written in Python (wit/tark.wit auth-world; docs/writing-plugins.md).

A pretend device flow: `start_device_flow` hands out a code, the second `poll` signs in and stores a token.
Replace it with real HTTP calls (`wit_world.imports.http`, and `capabilities.http` in plugin.toml).
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.auth_plugin import (AuthStatus, DeviceCode, PollResult, PollResult_Pending,
                                           PollResult_Success)
from wit_world.imports import storage


class AuthPlugin(exports.AuthPlugin):
    def display_name(self) -> str:
        return "{name}"

    def status(self) -> AuthStatus:
        return AuthStatus.AUTHENTICATED if storage.get("token") else AuthStatus.NOT_AUTHENTICATED

    def start_device_flow(self) -> DeviceCode:
        storage.set("polls", "0")
        return DeviceCode(device_code="dev-1", user_code="ABCD-1234",
                          verification_uri="https://example.com/device", expires_in=600, interval=1)

    def poll(self, device_code: str) -> PollResult:
        polls = int(storage.get("polls") or "0") + 1
        storage.set("polls", str(polls))
        if polls < 2:
            return PollResult_Pending()
        storage.set("token", f"token-for-{{device_code}}")
        return PollResult_Success()

    def get_token(self) -> str:
        token = storage.get("token")
        if token is None:
            raise Err("not signed in: run `tark auth login {name}`")
        return token

    def logout(self) -> None:
        storage.delete("token")
