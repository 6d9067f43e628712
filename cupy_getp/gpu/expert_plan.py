"""The exchange plan of expert parallelism (numpy only: it runs on the host, from every rank's expert ids).

G ranks, rank q holding experts [q E/G, (q + 1) E/G) of every layer. Each rank routes its own rows: pair
r k + s (row r, top-k slot s) of rank g chose expert e = experts_g[r, s]. Per layer:

- dispatch: rank g sends to the owner q = e // (E / G) of each of its pairs the pair's activation row, in pair
  order; rank q receives the segments of ranks 0..G-1 in rank order, and runs its grouped products over
  them with local expert ids e - q E/G (one pair a "row": top_k = 1);
- return: rank q sends each pair's output back to the pair's rank, in the order it received them; rank g
  receives the segments of ranks 0..G-1 in rank order, so pair j of its segment from q is at
  `return_position`; `moe_combine` then sums row r's slots s = 0..k-1 in slot order through those
  positions, the very order of one GPU's combine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DeviceError


def check_divisible(n_experts: int, n_ranks: int) -> int:
    """Experts per rank; one clear error where the experts cannot be split evenly."""
    if n_ranks < 1 or n_experts % n_ranks:
        raise DeviceError(f"expert parallelism over {n_ranks} ranks needs the experts ({n_experts}) to split "
                          f"evenly: choose a number of ranks that divides {n_experts}")
    return n_experts // n_ranks


def rank_experts(n_experts: int, rank: int, n_ranks: int) -> tuple[int, int]:
    """The experts [lo, hi) of every layer that rank q of G holds: [q E/G, (q + 1) E/G)."""
    per_rank = check_divisible(n_experts, n_ranks)
    return rank * per_rank, (rank + 1) * per_rank


@dataclass(frozen=True)
class ExchangePlan:
    """Which pairs go where, for one layer of one step (every rank computes the same plan)."""

    n_ranks: int
    experts_per_rank: int
    top_k: int
    send_pairs: tuple  # [src][dst]: src's pair ids (r k + s) whose expert dst holds, increasing
    sent_experts: tuple  # [src][dst]: their expert ids (global)

    def counts(self, src: int) -> list[int]:
        """Pairs src sends to each rank (= the outputs it gets back from each)."""
        return [len(p) for p in self.send_pairs[src]]

    def received_counts(self, dst: int) -> list[int]:
        """Pairs dst receives from each rank (= the outputs it sends back to each)."""
        return [len(self.send_pairs[src][dst]) for src in range(self.n_ranks)]

    def dispatch_rows(self, src: int) -> np.ndarray:
        """(n,) i32: src's activation row of each pair it sends, segments in destination order."""
        return (np.concatenate(self.send_pairs[src]) // self.top_k).astype(np.int32)

    def local_experts(self, dst: int) -> np.ndarray:
        """(N, 1) i32: the local expert id (e - dst E/G) of each pair dst receives, segments in source order."""
        ids = np.concatenate([self.sent_experts[src][dst] for src in range(self.n_ranks)])
        return (ids - dst * self.experts_per_rank).astype(np.int32).reshape(-1, 1)

    def return_positions(self, src: int) -> np.ndarray:
        """(pairs of src,) i32: where each of src's pairs lies in the outputs it gets back (segments in the
        order of the ranks that computed them): `moe_combine`'s padded_of_pair."""
        n_pairs = sum(self.counts(src))
        positions = np.full(n_pairs, -1, np.int32)
        positions[np.concatenate(self.send_pairs[src])] = np.arange(n_pairs, dtype=np.int32)
        return positions


def plan_exchange(experts_by_rank: list[np.ndarray], n_experts: int) -> ExchangePlan:
    """The plan from every rank's expert ids (R_g, k) of one layer."""
    n_ranks = len(experts_by_rank)
    per_rank = check_divisible(n_experts, n_ranks)
    top_k = experts_by_rank[0].shape[1]
    send, sent = [], []
    for experts in experts_by_rank:
        flat = np.asarray(experts, np.int64).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= n_experts):
            raise ValueError(f"expert ids outside [0, {n_experts})")
        owner = flat // per_rank
        pairs = [np.flatnonzero(owner == q) for q in range(n_ranks)]
        send.append(tuple(pairs))
        sent.append(tuple(flat[p] for p in pairs))
    return ExchangePlan(n_ranks, per_rank, top_k, tuple(send), tuple(sent))
