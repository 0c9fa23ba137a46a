"""Stand-in for ``cuda.bindings`` (cuda-python 12.6 and newer)."""
