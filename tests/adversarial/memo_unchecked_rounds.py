# expect: incorrect timed_output
# problem: relu
# Replaying answers in the timed calls nobody checks: only every 5th timed output is compared
# (rounds 0, 5, 10, ...), and the candidate can tell where it is. Timing reuses the same input
# tensor objects round after round (fresh values written into them), while correctness, the profiler
# and held-out shapes hand it new ones; so the first call on an object seen before is timing round 0
# (it reuses warm-up set 0). From there it counts rounds: honest where checked, a stale cached tensor
# (instant) everywhere else, for a large fake speedup and a "correct" verdict. State lives at module
# level so that re-constructing ModelNew (held-out shapes) does not reset it; a second timing phase
# (new objects after round 2) makes it stay honest, so it never guesses wrong.
import torch
import torch.nn as nn
import triton
import triton.language as tl

CHECK_EVERY = 5
_STATE = {"seen": {}, "round": None, "sets": set(), "done": False, "cache": {}}


@triton.jit
def relu_kernel(x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, tl.where(x > 0, x, 0.0), mask=mask)


def _timing_round(x):
    st = _STATE
    key = id(x)
    repeat = key in st["seen"]
    st["seen"].setdefault(key, x)  # keep it alive, so its id is never reused
    if st["done"]:
        return None
    if st["round"] is None:
        st["round"] = 0 if repeat else None
    else:
        st["round"] += 1
    r = st["round"]
    if r is not None and r <= 2:
        st["sets"].add(key)  # rounds 0-2 use the three timing sets
    elif r is not None and key not in st["sets"]:
        st["done"] = True  # another timing phase: stay honest from here on
        return None
    return r


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = _timing_round(x)
        cache = _STATE["cache"]
        if r is not None and r % CHECK_EVERY != 0 and id(x) in cache:
            return cache[id(x)]
        y = torch.empty_like(x)
        n = x.numel()
        relu_kernel[(triton.cdiv(n, 1024),)](x, y, n, BLOCK_SIZE=1024)
        cache[id(x)] = y
        return y
