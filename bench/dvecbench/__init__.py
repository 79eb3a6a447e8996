"""d-vecDB's benchmark harness (`make bench`): HTTP figures beside in-process hnswlib and Chroma."""
