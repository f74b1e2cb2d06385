"""Pilotfish: a service mesh in Python that reads Istio's YAML."""

__version__ = "0.1.0"
