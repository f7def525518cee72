"""Triton kernels for the training recipes; `kernels.attention` is the entry point.

Nothing here imports mlflow_autoresearch, and triton stays optional: without it every call
falls back to PyTorch.
"""
