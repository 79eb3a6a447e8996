// Pinned build of containerd v2 (the local node's container runtime, with its CRI plugin).
module dvecdb.io/localkube/containerd

go 1.26.6

require github.com/containerd/containerd/v2 v2.4.2 // indirect
