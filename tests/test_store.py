"""The `TrialStore` conformance suite on MLflow: a SQLite file, and a loopback `mlflow server`."""

import pytest

from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing.store_contract import TrialStoreContract
from support import mlflow_server


class TestSqliteStore(TrialStoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path):
        return lambda: MlflowStore(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("server")) as url:
        yield url


class TestServerStore(TrialStoreContract):
    @pytest.fixture
    def store_factory(self, shared_server):
        return lambda: MlflowStore(shared_server)
