"""The GPU engine: CuPy device layer, portable HIP/CUDA kernels, BF16 MoE weights."""
