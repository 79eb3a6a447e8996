// Pinned build of the CNI plugins the local node uses: bridge, host-local, loopback, portmap.
module dvecdb.io/localkube/cni

go 1.26.8

require github.com/containernetworking/plugins v1.10.0 // indirect
