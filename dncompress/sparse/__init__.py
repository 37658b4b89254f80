"""Sparsity inside dense tensors: weight pruning (SIMD groups, unstructured), the .dns sparse format,
activation sparsity and dynamic masks."""
