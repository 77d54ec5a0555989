"""FFT-friendly sizes: lengths whose only prime factors are 2, 3 and 5 transform fast."""

from __future__ import annotations


def is_smooth(n: int) -> bool:
    """True when ``n`` has no prime factor above 5."""
    k = int(n)
    if k < 1:
        return False
    for p in (2, 3, 5):
        while k % p == 0:
            k //= p
    return k == 1


def next_fast_size(n: int | float, step: int = 1) -> int:
    """Smallest size >= ``n`` (a multiple of ``step`` when given, e.g. 2 for even) with no factor above 5."""
    m = max(int(-(-n // 1)), 1)
    m += (-m) % step
    while not is_smooth(m):
        m += step
    return m
