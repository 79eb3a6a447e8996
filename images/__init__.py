"""Container images of the node and the operator, built with podman over a cached base."""
