"""Length buckets: the few padded lengths a batch of token sequences can have, so a jitted step
compiles one program per bucket (`pipeline.bucketed_batches`, the trainers' batches, the scorer)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LengthBuckets:
    """Ascending padded lengths; a sequence of length n is padded to the smallest one >= n."""

    lengths: tuple[int, ...]

    def __post_init__(self):
        lengths = tuple(int(n) for n in self.lengths)
        if not lengths or any(n <= 0 for n in lengths) or list(lengths) != sorted(set(lengths)):
            raise ValueError(f"bucket lengths must be positive and strictly ascending, got {self.lengths}")
        object.__setattr__(self, "lengths", lengths)

    @classmethod
    def powers_of_two(cls, max_length: int, min_length: int = 16) -> "LengthBuckets":
        """`min_length, 2*min_length, ...` up to `max_length` (which is always the last bucket)."""
        if max_length < 1 or min_length < 1:
            raise ValueError(f"lengths must be positive, got min_length={min_length} max_length={max_length}")
        lengths = []
        n = min(min_length, max_length)
        while n < max_length:
            lengths.append(n)
            n *= 2
        lengths.append(max_length)
        return cls(tuple(lengths))

    @classmethod
    def half_powers_of_two(cls, max_length: int, min_length: int = 16) -> "LengthBuckets":
        """Powers of two and the points half-way between: `64, 96, 128, 192, 256, 384, 512`, up
        to `max_length` (always the last). At most a third of a batch is padding, against half
        with powers of two, for twice the compiled shapes."""
        base = cls.powers_of_two(max_length, min_length).lengths
        lengths = set(base)
        lengths.update(n + n // 2 for n in base[:-1] if n % 2 == 0 and n + n // 2 < max_length)
        return cls(tuple(sorted(lengths)))

    @property
    def max_length(self) -> int:
        return self.lengths[-1]

    def index(self, length: int) -> int:
        """Index of the bucket a sequence of `length` tokens is padded to."""
        for i, bucket in enumerate(self.lengths):
            if length <= bucket:
                return i
        raise ValueError(f"sequence of {length} tokens is longer than the largest bucket ({self.max_length})")

    def padded(self, length: int) -> int:
        """The padded length for a sequence of `length` tokens (callers truncate to max_length first)."""
        return self.lengths[self.index(min(length, self.max_length))]
