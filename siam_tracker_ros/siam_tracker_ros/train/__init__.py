"""
Training: data readers, the pair sampler, losses, the data-loader and the siam-train loop.

Needs PyTorch (like ``nets``); never imported by core/, eval/, backends/ or ros/.
"""
