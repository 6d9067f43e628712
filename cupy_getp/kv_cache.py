"""The KV cache's element (`--kv-cache`), for every engine that keeps one: FP32 by default; BF16 (bit patterns on the
GPU, each key and value rounded to nearest even as it is written) halves its bytes and attention's reads, at a drift
the benchmark's drift part reports. The numpy engine rounds the same values the same way, so `diff --batch
--kv-cache bf16` checks the GPU engine against a reference of the same model."""

from __future__ import annotations

import numpy as np

from .errors import GetpError

KV_CACHE_DTYPES = {"fp32": np.float32, "bf16": np.uint16}  # the GPU engine's arrays


def check_kv_cache(kv_cache: str) -> None:
    """Refuse a KV cache element that is not one of KV_CACHE_DTYPES, in one line."""
    if kv_cache not in KV_CACHE_DTYPES:
        raise GetpError(f"unknown KV cache {kv_cache!r} (expected {', '.join(KV_CACHE_DTYPES)})")
