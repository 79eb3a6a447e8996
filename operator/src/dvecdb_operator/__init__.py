"""d-vecDB operator: reconciles `DVecCluster` resources and runs each cluster's failover.

The import name is ``dvecdb_operator`` (the folder keeps the product name ``operator/``, but
``import operator`` must still give the standard library).

Layering: ``handlers`` registers kopf handlers and delegates to ``runtime``; ``builders`` and
the decision modules (``decisions``, ``upgrade``, ``status``, ``drift``) are pure; a pass
(``monitor``) reads the cluster once, asks ``decisions`` for the next step and has the
``executor`` carry it out until a step says to wait; ``reconcile`` converges the children;
``kube`` is the only module that calls the Kubernetes API and ``members`` the only one that
talks to nodes.
"""
