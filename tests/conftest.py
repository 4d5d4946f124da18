"""Test-wide settings: one torch thread (tiny models run faster single-threaded and the
suite then behaves the same on a busy 2-core machine)."""

import torch

torch.set_num_threads(1)
