"""Shared test settings.

One intra-op thread: the tests use small tensors, and on a busy 2-core machine torch's default
thread pool spends most of its time waiting for cores (a 1000-step rollout took 28 s instead of 0.5 s).
"""

import torch

torch.set_num_threads(1)
