"""PyTorch: structured pruning (Torch-Pruning), 2:4 sparsity, training progress."""
