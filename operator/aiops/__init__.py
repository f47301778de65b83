"""aiops-operator: an on-prem AI platform (serving, vector search, training) as Kubernetes resources."""

__version__ = "0.1.0"
