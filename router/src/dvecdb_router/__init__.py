"""d-vecDB's router: the node's data API in front of a sharded cluster (DESIGN.md "Horizontal
scale: shards and the router")."""
