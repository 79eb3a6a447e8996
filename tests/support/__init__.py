"""Helpers shared by several test folders (``from tests.support.operator_fakes import FakeKube``).

``operator_fakes``: an in-memory Kubernetes API and node fakes for the operator's passes.
``faultproxy``: a TCP proxy between real processes that can drop, delay or cut links.
"""
