"""Demos of d-vecDB: ``python -m demo`` (a cluster on local Kubernetes, `make demo`) and
``python -m demo.standalone`` (one standalone node surviving SIGKILL)."""
