"""localkube: the real Kubernetes control plane plus a process kubelet, for tests and demos.

There is no container engine on the project's machines, so instead of kind this package runs
etcd, kube-apiserver and kube-controller-manager (built from their published Go modules) and
a small kubelet that runs each pod's containers as local processes inside their own network
namespaces on a bridge the harness owns.
"""
