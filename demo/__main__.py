"""``python -m demo``: the cluster demo on local real Kubernetes (see ``demo.cluster``)."""

from demo.cluster import main

if __name__ == "__main__":
    main()
