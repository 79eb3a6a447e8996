"""Replication: roles and epochs, the leader's log stream, followers, write acknowledgements.

``install(app)`` (registered by the CLI through ``create_app(extra_routes=...)``) adds the admin
and replication endpoints and replaces the single-node hooks with a
:class:`~dvecdb_node.replication.manager.ReplicationManager`.
"""
