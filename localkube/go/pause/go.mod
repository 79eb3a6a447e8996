// The sandbox ("pause") program of the local node's pods: no registry is reachable here, so
// localkube builds this image itself instead of pulling registry.k8s.io/pause.
module dvecdb.io/localkube/pause

go 1.26.0
