"""The suite's network guard (pytest-socket, configured in pyproject's addopts): tests may
connect to loopback only; any other address fails the test before a packet is sent."""

from __future__ import annotations

import socket
import threading

import pytest
import pytest_socket


def _guard_is_on() -> bool:
    return socket.socket.connect is not pytest_socket._true_connect


@pytest.mark.filterwarnings("ignore:A test tried to use socket.socket.connect")
@pytest.mark.parametrize("address", ["192.0.2.1", "10.255.255.1"])  # TEST-NET-1, private
def test_a_connection_off_loopback_is_refused_before_any_packet(address, monkeypatch):
    # checked first: without the guard, the connect below would really try to reach out
    assert _guard_is_on(), "pytest-socket's --allow-hosts is not active (see pyproject addopts)"
    reached = []
    monkeypatch.setattr(pytest_socket, "_true_connect", lambda *args: reached.append(args))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)  # a real connect would return at once, its SYN sent
    with pytest.raises(pytest_socket.SocketConnectBlockedError, match=address):
        sock.connect((address, 80))
    assert reached == []  # the system's connect was never called
    assert sock.fileno() == -1  # and the socket is closed: nothing can follow
    with pytest.raises(pytest_socket.SocketConnectBlockedError):
        socket.create_connection((address, 443), timeout=0.1)


def test_loopback_connections_are_allowed():
    assert _guard_is_on()
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            server = socket.socket(family, socket.SOCK_STREAM)
            server.bind((host, 0))
        except OSError:  # no IPv6 on this machine
            continue
        with server:
            server.listen(1)
            port = server.getsockname()[1]
            accepted = threading.Thread(target=lambda s=server: s.accept()[0].close())
            accepted.start()
            with socket.create_connection((host, port), timeout=5) as client:
                assert client.getpeername()[1] == port
            accepted.join(timeout=5)
