"""bench/step_ablation.py: its groups name kernels that exist, `small` and `products` are the unions they say, a
group's launches are left out only inside the context that leaves them out, and --set's constants hold only inside
theirs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from cupy_getp.gpu.kernels import ENTRY_POINTS

ROOT = Path(__file__).resolve().parents[1]
KERNEL_NAMES = [name for family in ENTRY_POINTS.values() for name in family]
SMALL = ("rmsnorm", "rope_kv_write", "attention", "router", "moe_align", "moe_combine")
PRODUCTS = ("qkv", "out_proj", "mlp1", "mlp2")


def ablation_module(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # its `timing` import, as when run from bench/
    spec = importlib.util.spec_from_file_location("bench_step_ablation", ROOT / "bench" / "step_ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def matched(pattern: str) -> set[str]:
    return {name for name in KERNEL_NAMES if re.search(pattern, name)}


def test_every_group_names_kernels_that_exist(monkeypatch):
    groups = ablation_module(monkeypatch).GROUPS
    for group, pattern in groups.items():
        assert matched(pattern), f"{group}: {pattern!r} names no kernel of ENTRY_POINTS"


def test_small_and_products_are_the_unions_of_their_groups(monkeypatch):
    groups = ablation_module(monkeypatch).GROUPS
    assert matched(groups["small"]) == set().union(*(matched(groups[g]) for g in SMALL))
    assert matched(groups["products"]) >= set().union(*(matched(groups[g]) for g in PRODUCTS))
    assert not matched(groups["small"]) & matched(groups["products"])


class Recorder:
    """What a Kernels object launches (the class's _launch, which the bench shadows on the instance)."""

    def __init__(self):
        self.names: list[str] = []

    def _launch(self, name, grid, block, args, shared_mem=0):
        self.names.append(name)


def test_launches_are_left_out_only_inside_the_context(monkeypatch):
    ablation = ablation_module(monkeypatch)
    kernels = Recorder()
    with ablation.launches_left_out(kernels, re.compile(ablation.GROUPS["router"])):
        kernels._launch("router_rows_bf16w", (1,), (256,), ())
        kernels._launch("moe_align", (1,), (32,), (), shared_mem=0)
    kernels._launch("router_rows_bf16w", (1,), (256,), ())
    assert kernels.names == ["moe_align", "router_rows_bf16w"]
    assert "_launch" not in vars(kernels)  # the class's launch again


def test_set_constants_hold_inside_the_context_only_and_bad_ones_are_refused(monkeypatch):
    ablation = ablation_module(monkeypatch)
    from cupy_getp.gpu.launch import attention, moe

    fused, rows = attention.ATTN_FUSED_MAX_ROWS, moe.ROUTER_MAX_ROWS
    with ablation.constants_set("attention.ATTN_FUSED_MAX_ROWS=100000+moe.ROUTER_MAX_ROWS=1"):
        assert (attention.ATTN_FUSED_MAX_ROWS, moe.ROUTER_MAX_ROWS) == (100000, 1)
        assert moe.router_rows_per_block(2000, 132) == 1  # the launch helper reads the module's constant
    assert (attention.ATTN_FUSED_MAX_ROWS, moe.ROUTER_MAX_ROWS) == (fused, rows)
    for bad in ("attention.ATTN_FUSED_MAX_ROWS=many", "attention.NO_SUCH=1", "attention.ATTN_PARTIAL_BOUNDS=1",
                "moe.ROUTER_MAX_ROWS=2+attention.NO_SUCH=1"):
        with pytest.raises(ValueError, match="module.NAME=integer"):
            with ablation.constants_set(bad):
                pass
        assert (attention.ATTN_FUSED_MAX_ROWS, moe.ROUTER_MAX_ROWS) == (fused, rows), bad  # set back after a failure
