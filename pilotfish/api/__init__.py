"""User-facing resources: Kubernetes core kinds and Istio's kinds, parsed and validated."""
