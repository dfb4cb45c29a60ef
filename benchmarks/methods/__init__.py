"""The quantization methods the benchmarks compare, by name, behind one small interface.

A method turns a trained float model into a model to fine-tune (``Method.build``), and after
fine-tuning hands back the model to evaluate and its cost. The fine-tuning loop, its data,
optimizer and steps belong to the caller and are the same for every method.

Modules:
    base: Job (what to quantize to), Prepared (what a method hands back), Method.
    ours: UNIQ (gradual, one-shot, per-channel, empirical fit) and the baselines built on this
        package's layers (straight-through k-quantile, uniform and k-means, post-training).
    lsq: learned step size quantization of the weights (Esser et al. 2020).
    peers: Brevitas, torch.ao and DiffQ quantization-aware training.
"""

from methods.base import Job, Method, Prepared, available
from methods.ours import OUR_METHODS
from methods.peers import PEER_METHODS

METHODS: dict[str, Method] = {m.name: m for m in (*OUR_METHODS, *PEER_METHODS)}

__all__ = ["METHODS", "Job", "Method", "Prepared", "available"]
