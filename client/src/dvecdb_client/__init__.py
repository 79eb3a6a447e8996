"""The Python client of d-vecDB (``pip install dvecdb-client``).

A light distribution of its own so that the operator, the bench, the tests and users talk to
nodes without installing the node (hnswlib) or the operator (kopf, kubernetes):

- :class:`NodeClient` (async) and :class:`SyncNodeClient` (blocking) speak a node's HTTP API;
  errors raise :class:`NodeError`, and :class:`NotLeader` names the leader.
- :mod:`dvecdb_client.bulk` and :mod:`dvecdb_client.querybody` write the binary upsert and
  search bodies; the node reads them with the same header definitions.
"""

from dvecdb_client.client import NodeClient, NodeError, NotLeader, SyncNodeClient

__all__ = ["NodeClient", "NodeError", "NotLeader", "SyncNodeClient"]
