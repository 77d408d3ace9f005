"""Splitting a cohort across machines: ``--shard I/N`` or ``--shard slurm``.

A shard is ``(i, n)``: part ``i`` (1-based) of ``n``. The sorted work list is dealt out
round-robin (items ``i-1, i-1+n, ...``), so every item lands in exactly one part and the parts
differ in size by at most one item.

``slurm`` reads a SLURM job array's variables: ``SLURM_ARRAY_TASK_ID``,
``SLURM_ARRAY_TASK_COUNT`` and, where SLURM sets them (it always does for an array),
``SLURM_ARRAY_TASK_MIN`` and ``SLURM_ARRAY_TASK_STEP``, so ``--array=0-9``, ``--array=1-10`` and
``--array=0-18:2`` all give parts 1..10 of 10.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TypeVar

from lofihippseg.errors import LoFiError

T = TypeVar("T")

SLURM_ID = "SLURM_ARRAY_TASK_ID"
SLURM_COUNT = "SLURM_ARRAY_TASK_COUNT"
SLURM_MIN = "SLURM_ARRAY_TASK_MIN"
SLURM_STEP = "SLURM_ARRAY_TASK_STEP"


def _int_env(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise LoFiError(
                f"--shard slurm: {name} is not set; run inside a SLURM job array "
                "(sbatch --array=0-N), or give --shard I/N"
            )
        return default
    try:
        return int(raw)
    except ValueError:
        raise LoFiError(f"--shard slurm: {name}={raw!r} is not an integer") from None


def slurm_shard(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """The ``(i, n)`` shard of this SLURM array task.

    Args:
        env: the environment (default ``os.environ``).

    Returns:
        ``(i, n)`` with ``1 <= i <= n``.

    Raises:
        LoFiError: the array variables are unset, not integers, or describe a task outside
            a contiguous array (e.g. ``--array=1,5,9``).

    Example:
        >>> slurm_shard({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4",
        ...              "SLURM_ARRAY_TASK_MIN": "0"})
        (4, 4)
    """
    env = os.environ if env is None else env
    task = _int_env(env, SLURM_ID)
    count = _int_env(env, SLURM_COUNT)
    first = _int_env(env, SLURM_MIN, default=0)
    step = _int_env(env, SLURM_STEP, default=1)
    if count < 1 or step < 1:
        raise LoFiError(f"--shard slurm: bad array ({SLURM_COUNT}={count}, {SLURM_STEP}={step})")
    offset, rest = divmod(task - first, step)
    if rest or not 0 <= offset < count:
        raise LoFiError(
            f"--shard slurm: task {task} is not one of {count} evenly spaced tasks from {first} "
            f"(step {step}); use a contiguous array such as --array=0-{count - 1}"
        )
    return offset + 1, count


def parse_shard(value: str | None, env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """Parse a ``--shard`` value: None, ``I/N`` (1-based) or ``slurm``.

    Example:
        >>> parse_shard("2/5")
        (2, 5)
        >>> parse_shard(None) is None
        True
    """
    if value is None:
        return None
    if value.strip().lower() == "slurm":
        return slurm_shard(env)
    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise LoFiError(
            f"--shard must look like I/N (e.g. 1/4) or 'slurm', got {value!r}"
        ) from None
    if n < 1 or not 1 <= i <= n:
        raise LoFiError(f"--shard must be I/N with 1 <= I <= N, got {value!r}")
    return i, n


def take_shard(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The items of part ``shard`` (round-robin over the given order); all items for None.

    Example:
        >>> take_shard(["a", "b", "c", "d", "e"], (2, 2))
        ['b', 'd']
    """
    if shard is None:
        return list(items)
    i, n = shard
    return list(items[i - 1 :: n])
