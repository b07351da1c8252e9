import os

import torch as th

# One torch thread: 2-4x faster on the 2-core machines we test on, and deterministic.
th.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
