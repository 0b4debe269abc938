"""Fixtures for integration tests: a real Dovecot (one per session) and a
fresh popgate per test, in front of it.

popgate comes from $POPGATE_BIN, else <repo>/build/popgate. A missing binary
makes the tests that need it fail (not skip)."""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

import pytest  # noqa: E402

from pgtest import mailbox as mb  # noqa: E402
from pgtest.dovecot import Dovecot  # noqa: E402
from pgtest.popgate import Popgate, popgate_bin  # noqa: E402

USERS = mb.TEST_USERS


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def alice_messages():
    return mb.alice_messages()


@pytest.fixture(scope="session")
def bob_messages():
    return mb.bob_messages()


@pytest.fixture(scope="session")
def dovecot(alice_messages, bob_messages):
    """Dovecot with `ssl = no` (CAPA has no STLS)."""
    with Dovecot(USERS) as dc:
        dc.populate("alice", alice_messages)
        dc.populate("bob", bob_messages)
        yield dc


@pytest.fixture(scope="session")
def dovecot_stls(alice_messages):
    """A second Dovecot that offers STLS (self-signed certificate), to see
    popgate remove it."""
    with Dovecot(USERS, ssl=True) as dc:
        dc.populate("alice", alice_messages)
        yield dc


CAROL_MESSAGES = [mb.Message(f"carol-{i}", mb.ordinary(i, user="carol")) for i in (1, 2, 3)]


@pytest.fixture
def carol(dovecot):
    """carol's mailbox reset to three ordinary messages."""
    dovecot.reset("carol", CAROL_MESSAGES)
    return CAROL_MESSAGES


@pytest.fixture(scope="session")
def popgate_binary(tmp_path_factory):
    """A private copy of the binary, taken once: the whole run uses the same
    build even if build/popgate is rebuilt meanwhile. None when missing (the
    tests that need it then fail with the path in the message)."""
    src = popgate_bin()
    if not src.exists():
        return None
    dst = tmp_path_factory.mktemp("popgate-bin") / "popgate"
    shutil.copy2(src, dst)
    return dst


class PopgateFactory:
    def __init__(self, binary):
        self.binary = binary
        self.instances = []

    def __call__(self, upstream: str, *extra: str) -> Popgate:
        pg = Popgate.start(["--upstream", upstream, *extra], binary=self.binary)
        self.instances.append(pg)
        return pg

    def finish(self):
        """Every popgate must still be running and exit 0 on SIGTERM."""
        problems = []
        for pg in self.instances:
            if pg.stopped:  # the test stopped (and checked) it itself
                continue
            if not pg.alive():
                problems.append(f"popgate exited during the test with {pg.proc.returncode}; "
                                f"stderr:\n{pg.log[-5000:]}")
                continue
            try:
                pg.stop(check=True)
            except Exception as e:  # noqa: BLE001 - collected and reported below
                problems.append(str(e))
            if "ERROR: AddressSanitizer" in pg.log or "runtime error:" in pg.log:
                problems.append(f"sanitizer report in popgate's stderr:\n{pg.log[-5000:]}")
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def popgate_factory(popgate_binary):
    """Start popgates: popgate_factory(upstream_address, *extra_args)."""
    factory = PopgateFactory(popgate_binary)
    yield factory
    factory.finish()


@pytest.fixture
def popgate(popgate_factory, dovecot):
    """popgate in front of the session's Dovecot."""
    return popgate_factory(dovecot.address, "--log-level", "debug")
