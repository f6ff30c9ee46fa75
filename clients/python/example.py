"""Squares a million integers on a Shoal grid, then sums a few pairs.

    shoal node &                       # or a whole grid
    python3 clients/python/example.py 127.0.0.1:7373
"""

import sys

import shoal

seed = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7373"
with shoal.Client(seed) as c:
    print("square(12) =", c.call("square", 12))
    total = sum(c.map("square", range(1_000_000)))
    print("sum of the squares below a million =", total)
    print("sums:", list(c.map("add", [[1, 2], [3, 4], [5, 6]])))
