"""Communicators of expert parallelism: the two collectives it needs, over G ranks.

A communicator drives the ranks of this process (`local_ranks`): all G of them for the in-process stand-in
(every rank a set of arrays in one process, on one device or the CPU), one for NCCL (a process per GPU).
Every call takes one buffer (or list of counts) per local rank, in `local_ranks` order.

- `all_gather(sends, recvs)`: recvs[i] (G, *send.shape) = every rank's send, in rank order.
- `all_to_all(sends, send_counts, recvs, recv_counts)`: rows of 2-D buffers. Local rank i sends rows
  [o_j, o_j + send_counts[i][j]) of sends[i] to rank j (segments in rank order from row 0), and receives
  recv_counts[i][j] rows from rank j into recvs[i], segments in rank order from row 0.
"""

from __future__ import annotations

import numpy as np


def offsets(counts: list[int]) -> list[int]:
    """Where each rank's segment starts (segments in rank order from row 0)."""
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()


class InProcessCommunicator:
    """G ranks in one process: the collectives are copies, in a fixed order (destination, then source)."""

    def __init__(self, n_ranks: int):
        self.n_ranks = n_ranks
        self.local_ranks = tuple(range(n_ranks))

    def all_gather(self, sends: list, recvs: list) -> None:
        for recv in recvs:
            for src, send in enumerate(sends):
                recv[src][...] = send

    def all_to_all(self, sends: list, send_counts: list[list[int]], recvs: list,
                   recv_counts: list[list[int]]) -> None:
        for dst, recv in enumerate(recvs):
            at = offsets(recv_counts[dst])
            for src, send in enumerate(sends):
                n = send_counts[src][dst]
                if n != recv_counts[dst][src]:
                    raise ValueError(f"all_to_all: rank {src} sends {n} rows to rank {dst}, which expects "
                                     f"{recv_counts[dst][src]}")
                start = offsets(send_counts[src])[dst]
                if n:
                    recv[at[src]: at[src] + n] = send[start: start + n]


class NcclCommunicator:
    """One rank of G over NCCL (RCCL on ROCm), through `cupy.cuda.nccl`: all-gather, and the all-to-all as
    grouped send/recv pairs (NCCL >= 2.7). Ran on 2 x H200 with NCCL 2.28.9 (tests/test_gpu_multi_gpu.py, the
    120b's logits bit for bit: docs/multi-gpu.md); its offsets and counts are also checked over a fake NCCL
    (tests/test_expert_parallel.py). Not run on RCCL."""

    def __init__(self, n_ranks: int, rank: int, unique_id, stream):
        from cupy.cuda import nccl

        self.nccl, self.stream = nccl, stream
        self.n_ranks, self.rank = n_ranks, rank
        self.local_ranks = (rank,)
        self.comm = nccl.NcclCommunicator(n_ranks, unique_id, rank)

    def _dtype(self, array) -> int:
        types = {np.dtype(np.float32): self.nccl.NCCL_FLOAT32, np.dtype(np.int32): self.nccl.NCCL_INT32}
        return types[np.dtype(array.dtype)]

    def all_gather(self, sends: list, recvs: list) -> None:
        (send,), (recv,) = sends, recvs
        self.comm.allGather(send.data.ptr, recv.data.ptr, send.size, self._dtype(send), self.stream.ptr)

    def all_to_all(self, sends: list, send_counts: list[list[int]], recvs: list,
                   recv_counts: list[list[int]]) -> None:
        (send,), (recv,), (out_counts,), (in_counts,) = sends, recvs, send_counts, recv_counts
        row_bytes, row_size = send[0].nbytes, send[0].size
        out_at, in_at = offsets(out_counts), offsets(in_counts)
        self.nccl.groupStart()
        for peer in range(self.n_ranks):
            if out_counts[peer]:
                self.comm.send(send.data.ptr + out_at[peer] * row_bytes, out_counts[peer] * row_size,
                               self._dtype(send), peer, self.stream.ptr)
            if in_counts[peer]:
                self.comm.recv(recv.data.ptr + in_at[peer] * row_bytes, in_counts[peer] * row_size,
                               self._dtype(recv), peer, self.stream.ptr)
        self.nccl.groupEnd()
