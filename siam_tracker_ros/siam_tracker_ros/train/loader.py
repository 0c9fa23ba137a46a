"""
The training data-loader: a torch DataLoader over pairs that are a pure function of an index.

Sample ``i`` is drawn with ``numpy.random.default_rng([seed, i])`` (or ``i % unique_pairs``),
so the batches depend only on the seed and the step: not on the worker count, the order in
which workers finish, or whether the run was resumed. Step ``n`` gets samples
``n * batch_size ... (n + 1) * batch_size - 1``. Each worker also seeds numpy, ``random`` and
torch from the loader's seeded generator (for any library randomness) and runs OpenCV and
torch on one thread.
"""
from __future__ import annotations

import random
from typing import Dict, Iterator, List, Sequence as Seq

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .pairs import PairSampler


class PairDataset(Dataset):
    """Map-style dataset: index -> one pair's tensors (numpy arrays)."""

    def __init__(self, sampler: PairSampler, seed: int, unique_pairs: int = 0):
        """Pairs drawn by ``sampler``; ``unique_pairs`` > 0 cycles through that many."""
        self.sampler = sampler
        self.seed = int(seed)
        self.unique_pairs = int(unique_pairs)

    def __len__(self) -> int:
        """Return the number of distinct pairs (unbounded: a very large number)."""
        return self.unique_pairs or 2 ** 62

    def rng(self, index: int) -> np.random.Generator:
        """Return the generator that draws sample ``index``."""
        key = index % self.unique_pairs if self.unique_pairs else index
        return np.random.default_rng([self.seed, int(key)])

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        """Return the batch item of sample ``index``."""
        return self.sampler.sample(self.rng(index)).batch_item()


class StepBatches(Sampler):
    """Index batches of steps ``start`` .. ``stop - 1`` (batch n = its n-th run of indices)."""

    def __init__(self, start: int, stop: int, batch_size: int):
        """Batches for the steps in [start, stop)."""
        self.start, self.stop, self.batch_size = int(start), int(stop), int(batch_size)

    def __len__(self) -> int:
        """Return the number of batches."""
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[List[int]]:
        """Yield each step's sample indices."""
        b = self.batch_size
        for step in range(self.start, self.stop):
            yield list(range(step * b, (step + 1) * b))


def seed_worker(worker_id: int) -> None:
    """Seed numpy, random and torch in a worker from its torch seed; one thread each."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def collate(items: Seq[Dict[str, np.ndarray]]) -> Dict[str, torch.Tensor]:
    """Stack the items' arrays into batch tensors."""
    return {key: torch.from_numpy(np.stack([item[key] for item in items]))
            for key in items[0]}


def make_loader(dataset: PairDataset, batch_size: int, start_step: int, stop_step: int,
                num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """
    Return a DataLoader yielding the batches of steps ``start_step`` .. ``stop_step - 1``.

    The loader has its own seeded generator, so creating it does not consume the global torch
    random state (which the model's own randomness uses). Workers start from a fork server,
    not a fork of this process: a fork taken while OpenCV's or torch's thread pools are busy
    can leave a worker deadlocked (seen here once with plain fork).
    """
    generator = torch.Generator()
    generator.manual_seed(dataset.seed)
    return DataLoader(dataset, batch_sampler=StepBatches(start_step, stop_step, batch_size),
                      num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory,
                      worker_init_fn=seed_worker, generator=generator,
                      multiprocessing_context='forkserver' if num_workers else None,
                      prefetch_factor=2 if num_workers else None)
