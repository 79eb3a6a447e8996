"""The node's one compiled part: filtered k-NN inside hnswlib's graph walk (native/)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dvecdb_node.storage._filtered_knn",
            sources=["native/filtered_knn.cpp"],
            include_dirs=["native"],
            extra_compile_args=["-O3", "-std=c++17"],
            language="c++",
        )
    ]
)
