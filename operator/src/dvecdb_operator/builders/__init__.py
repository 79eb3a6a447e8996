"""Pure builders: a cluster's name, namespace and typed spec in, Kubernetes manifests out.

No builder reads the cluster or the clock; owner references are added by the reconciler with
`kopf.adopt`, so every manifest here can be validated against the Kubernetes schemas offline.
"""
