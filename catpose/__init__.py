"""catpose: label-free category-level 3D pose from object-centric videos, on Ray."""

__version__ = "0.1.0"
