"""d-vecDB operator: reconciles `DVecCluster` resources and runs each cluster's failover.

The import name is ``dvecdb_operator`` (the folder keeps the product name ``operator/``, but
``import operator`` must still give the standard library).

Layering: ``handlers`` registers kopf handlers and delegates; ``builders`` and the decision
modules (``failover``, ``decisions``, ``status``, ``upgrade``) are pure; ``kube`` is the only
module that calls the Kubernetes API and ``members`` the only one that talks to nodes.
"""
