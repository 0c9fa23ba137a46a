"""Stand-in for ``cuda.cudart``, the runtime module's name before cuda-python 12.6."""
from cuda.bindings.runtime import *  # noqa: F401,F403
