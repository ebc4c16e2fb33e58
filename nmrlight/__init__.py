"""nmrlight: render-and-compare pose refinement with learned lighting."""

__version__ = "0.1.0"
