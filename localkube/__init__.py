"""localkube: a real Kubernetes control plane and node (containerd, runc), for tests and demos.

There is no Docker engine on the project's machines, so instead of kind this package runs
etcd, kube-apiserver and kube-controller-manager, and a node in its own network namespace
(kubelet, kube-proxy, kube-scheduler, containerd with runc, the CNI plugins), all built from
their published Go modules; pods are containers from the images `make images` builds.
"""
