"""Dreichor deploy controller: a pull-based GitOps controller for one runtime container per environment."""

__version__ = "0.1.0"
