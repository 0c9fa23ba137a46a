"""Stand-in for the cuda-python package (``cuda.bindings.runtime``, ``cuda.cudart``)."""
