import pytest
import zmq

from .publisher import TestPublisher


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def make_pub(ctx):
    pubs = []

    def make(**kw):
        p = TestPublisher(ctx, **kw)
        pubs.append(p)
        return p
    yield make
    for p in pubs:
        p.close()
