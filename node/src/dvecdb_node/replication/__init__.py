"""Replication: roles and epochs, the leader's log stream, followers, write acknowledgements.

``install(app)`` (passed by the CLI as ``create_app(extra_routes=[install])``) adds the admin
and replication endpoints and replaces the single-node hooks with a
:class:`~dvecdb_node.replication.manager.ReplicationManager`.

Modules, one job each:

- ``epochs``: the persisted highest epoch (``replication.json``) and the refusal rules.
- ``acks``: how many followers an ack level needs; lag arithmetic (pure).
- ``agreement``: where a follower's log agrees with the leader's, from epochs (pure).
- ``logview``: the leader's own log read for agreement and streaming (segment files).
- ``tracker``: the leader's follower positions and the writers waiting on them.
- ``leader``: ``/v1/replication/stream|snapshot|ack``.
- ``follower``: pull, durable append + apply, ack, truncate, snapshot, back off.
- ``manager``: promote / follow / fence / higher-epoch transitions; the cluster hooks.
- ``admin``, ``openapi``, ``metrics``, ``install``: HTTP and wiring.
"""
