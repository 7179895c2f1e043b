"""Topology: links between sites, the path a file takes over them, and throttling."""

from aso.topology.model import Link, Route, Topology
from aso.topology.paths import ChosenPath, NoPathError, shortest_path

__all__ = ["ChosenPath", "Link", "NoPathError", "Route", "Topology", "shortest_path"]
