"""numpy kernels: pure functions on NCHW float32 arrays."""
