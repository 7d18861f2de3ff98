import pytest

from descend.playground.server import url_of
from playground_client import Client, start_server


@pytest.fixture(scope="module")
def server():
    srv = start_server(max_sessions=8)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def client(server):
    return Client(url_of(server))
