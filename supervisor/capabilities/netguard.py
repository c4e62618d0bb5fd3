"""Outgoing connections that cannot reach internal addresses by accident or by DNS tricks.

The name is resolved once, every address is checked (policy.capabilities.refused_address_reason), and the
socket is connected to one of those checked addresses, so a second DNS answer (rebinding) is never used.
Loopback, private and link-local addresses are reachable only when a capabilities.http entry names the host
literally (an IP or `localhost`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing

import httpcore
import httpx

from policy.grants import refused_address_reason
from policy.patterns import HttpPattern


class AddressRefused(OSError):
    """The host resolves to an address the plugin may not reach."""


def normalize_host(host: str) -> str:
    host = host.strip().strip("[]").lower().rstrip(".")
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def literal_hosts(patterns: typing.Iterable[HttpPattern]) -> frozenset[str]:
    return frozenset(normalize_host(p.host) for p in patterns if p.names_address_literally)


LiteralHosts = typing.Union[frozenset[str], typing.Callable[[], frozenset[str]]]


def _current(literal: LiteralHosts) -> frozenset[str]:
    """Literal hosts may be given as a callable, so a revoked grant stops exempting its address at once."""
    return literal() if callable(literal) else literal


def resolve_checked(host: str, port: int, literal: frozenset[str]) -> list[tuple]:
    """getaddrinfo answers for host:port, all of them permitted. Raises AddressRefused or socket.gaierror."""
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    if normalize_host(host) in literal:
        return infos
    for _family, _type, _proto, _name, sockaddr in infos:
        reason = refused_address_reason(sockaddr[0])
        if reason is not None:
            raise AddressRefused(
                f"{host} resolves to {sockaddr[0]}, a {reason}; only allowed when capabilities.http names "
                "that address literally")
    return infos


def connect_checked(host: str, port: int, timeout: float | None, literal: frozenset[str]) -> socket.socket:
    """A TCP socket connected to a checked address of host:port."""
    error: OSError | None = None
    for family, type_, proto, _name, sockaddr in resolve_checked(host, port, literal):
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"no address for {host}")


class _CheckedBackend(httpcore.SyncBackend):
    def __init__(self, literal: LiteralHosts) -> None:
        self._literal = literal

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:
        try:
            infos = resolve_checked(host, port, _current(self._literal))
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error: Exception | None = None
        for *_rest, sockaddr in infos:
            try:
                return super().connect_tcp(sockaddr[0], port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        raise error or httpcore.ConnectError(f"no address for {host}")


def checked_transport(literal: LiteralHosts, max_connections: int) -> httpx.HTTPTransport:
    """An httpx transport without proxies whose every TCP connect goes through resolve_checked."""
    transport = httpx.HTTPTransport(trust_env=False, retries=0)
    # httpx has no public option for httpcore's network backend; replace the (still empty) pool with one that
    # has it. tests/test_cap_http.py fails if this stops taking effect.
    transport._pool.close()
    transport._pool = httpcore.ConnectionPool(network_backend=_CheckedBackend(literal), **_pool_options(max_connections))
    return transport


def _pool_options(max_connections: int) -> dict:
    """What httpx would give its own pool (no proxies, no environment), for the checked pools."""
    return dict(ssl_context=httpx.create_ssl_context(trust_env=False), max_connections=max_connections,
                max_keepalive_connections=max_connections, keepalive_expiry=5.0)


async def resolve_checked_async(host: str, port: int, literal: frozenset[str]) -> list[tuple]:
    """resolve_checked off the event loop (getaddrinfo blocks); a cancelled caller does not wait for it."""
    return await asyncio.get_running_loop().run_in_executor(None, resolve_checked, host, port, literal)


async def connect_checked_async(host: str, port: int, literal: frozenset[str]) -> socket.socket:
    """connect_checked for the event loop: a non-blocking socket connected to a checked address of host:port.
    The caller bounds the time (asyncio.timeout); cancelling closes the socket."""
    loop = asyncio.get_running_loop()
    error: OSError | None = None
    for family, type_, proto, _name, sockaddr in await resolve_checked_async(host, port, literal):
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"no address for {host}")


class _AsyncCheckedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, literal: LiteralHosts) -> None:
        self._literal = literal
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: typing.Iterable | None = None) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.wait_for(resolve_checked_async(host, port, _current(self._literal)), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise httpcore.ConnectError(str(exc) or "name resolution timed out") from exc
        error: Exception | None = None
        for *_rest, sockaddr in infos:
            try:
                return await self._inner.connect_tcp(sockaddr[0], port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        raise error or httpcore.ConnectError(f"no address for {host}")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable from plugins")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def checked_async_transport(literal: LiteralHosts, max_connections: int) -> httpx.AsyncHTTPTransport:
    """checked_transport for httpx.AsyncClient (host calls run on an event loop so they can be cancelled)."""
    transport = httpx.AsyncHTTPTransport(trust_env=False, retries=0)
    # As in checked_transport: the still-empty pool is replaced by one with the checked network backend.
    transport._pool = httpcore.AsyncConnectionPool(network_backend=_AsyncCheckedBackend(literal),
                                                   **_pool_options(max_connections))
    return transport
