"""Real POP3 clients fetch through popgate: every message must arrive exactly
as the same client gets it straight from Dovecot.

What each client changes in what it delivers, and how that is undone, is
described in tests/support/pgtest/clients.py."""

import pytest

from pgtest import clients
from pgtest.compare import assert_same_messages
from pgtest.mailbox import TEST_USERS as USERS
from pgtest.wire import Relay, split_commands

pytestmark = pytest.mark.clients

CLIENT_NAMES = list(clients.CLIENTS)


_direct_cache = {}


def direct_fetch(client: clients.Client, dovecot, user: str) -> list[bytes]:
    """The client's delivery straight from Dovecot (once per session)."""
    key = (client.name, user)
    if key not in _direct_cache:
        _direct_cache[key] = client.fetch(dovecot.host, dovecot.port, user, USERS[user])
    return _direct_cache[key]


@pytest.mark.parametrize("name", CLIENT_NAMES)
def test_client_direct_fetch_is_understood(name, dovecot, alice_messages):
    """Harness check (no popgate): undoing the client's documented changes
    gives back the wire form of every message. If this fails, a client's
    behaviour changed and clients.py must be updated."""
    client = clients.CLIENTS[name]
    got = [client.to_wire(m) for m in direct_fetch(client, dovecot, "alice")]
    assert_same_messages(got, [m.wire for m in alice_messages], [m.name for m in alice_messages],
                         f"{name} direct from Dovecot, normalised")


@pytest.mark.parametrize("name", CLIENT_NAMES)
def test_client_fetch_through_popgate(name, dovecot, popgate, alice_messages):
    client = clients.CLIENTS[name]
    names = [m.name for m in alice_messages]
    direct = direct_fetch(client, dovecot, "alice")
    proxied = client.fetch(popgate.host, popgate.port, "alice", USERS["alice"])
    assert_same_messages([client.comparable(m) for m in proxied],
                         [client.comparable(m) for m in direct], names,
                         f"{name} through popgate vs {name} direct from Dovecot")
    assert_same_messages([client.to_wire(m) for m in proxied], [m.wire for m in alice_messages],
                         names, f"{name} through popgate, normalised, vs the generated messages")


def test_poplib_fetches_200_messages(dovecot, popgate, bob_messages):
    proxied = clients.fetch_poplib(popgate.host, popgate.port, "bob", USERS["bob"])
    assert_same_messages(proxied, [m.wire for m in bob_messages], [m.name for m in bob_messages],
                         "poplib through popgate, bob's mailbox")


# ---------------------------------------------------------------- mpop pipelining

def _retr_count(conn) -> int:
    return sum(1 for c in split_commands(bytes(conn.c2s)) if c.upper().startswith(b"RETR "))


def _fetch_mpop_watching_pipelining(host, port):
    """mpop -> Relay -> host:port. Once mpop has sent its first RETR, the relay
    holds back every answer until mpop sends a second RETR. A client that
    waits for each answer before the next command never does, and the hold
    ends by timeout."""
    with Relay(host, port, hold=lambda conn: _retr_count(conn) != 1, hold_timeout=3.0) as relay:
        msgs = clients.fetch_mpop(relay.host, relay.port, "alice", USERS["alice"])
        assert len(relay.connections) == 1
        return msgs, relay.connections[0]


def _pipelining_report(conn) -> str:
    cmds = [c.decode(errors="replace") for c in split_commands(bytes(conn.c2s))]
    return f"mpop's commands: {cmds[:20]}; server bytes: {bytes(conn.s2c)[:600]!r}"


def test_mpop_pipelines_against_dovecot(dovecot):
    """Harness check (no popgate): mpop pipelines when CAPA lists PIPELINING,
    and the relay detects it."""
    msgs, conn = _fetch_mpop_watching_pipelining(dovecot.host, dovecot.port)
    assert b"PIPELINING" in bytes(conn.s2c)
    assert not conn.held_timeout, "mpop did not pipeline against Dovecot. " + _pipelining_report(conn)
    assert _retr_count(conn) == len(msgs)


def test_mpop_pipelines_through_popgate(dovecot, popgate, alice_messages):
    msgs, conn = _fetch_mpop_watching_pipelining(popgate.host, popgate.port)
    capa = bytes(conn.s2c).split(b"\r\n.\r\n")[0]
    assert b"\r\nPIPELINING\r\n" in capa, f"popgate's CAPA lacks PIPELINING: {capa!r}"
    assert not conn.held_timeout, ("mpop waited for each answer through popgate (no pipelining). "
                                   + _pipelining_report(conn))
    direct = direct_fetch(clients.CLIENTS["mpop"], dovecot, "alice")
    assert_same_messages(msgs, direct, [m.name for m in alice_messages],
                         "pipelining mpop through popgate vs mpop direct")
