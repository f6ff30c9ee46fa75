"""Tests of shoal.py against a real grid: python3 test_shoal.py SEED [SEED2]."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shoal  # noqa: E402

SEEDS = sys.argv[1:] or ["127.0.0.1:7373"]
del sys.argv[1:]


class ShoalTest(unittest.TestCase):
    def setUp(self):
        self.c = shoal.Client(SEEDS[0])

    def tearDown(self):
        self.c.close()

    def test_call(self):
        self.assertEqual(self.c.call("square", 12), 144)
        self.assertEqual(self.c.call("add", 2, 3), 5)

    def test_errors_say_their_kind(self):
        with self.assertRaises(shoal.ShoalError) as e:
            self.c.call("no_such_function", 1)
        self.assertEqual(e.exception.kind, "UnknownFunction")
        with self.assertRaises(shoal.ShoalError) as e:
            self.c.call("square", "twelve")
        self.assertEqual(e.exception.kind, "BadArguments")

    def test_map_of_a_range_in_order(self):
        n = 100_000
        count = 0
        for i, v in enumerate(self.c.map("square", range(n))):
            self.assertEqual(v, i * i)
            count += 1
        self.assertEqual(count, n)

    def test_map_of_inputs_in_order(self):
        n = 100_000
        inputs = ([i, 2 * i] for i in range(n))  # a generator: sent in batches
        count = 0
        for i, v in enumerate(self.c.map("add", inputs, batch=10_000)):
            self.assertEqual(v, 3 * i)
            count += 1
        self.assertEqual(count, n)

    def test_failed_item(self):
        job = self.c.submit("fail", ["a", "b"])
        out = list(job.results(errors="return"))
        self.assertEqual(len(out), 2)
        self.assertIsInstance(out[1], shoal.ItemError)
        self.assertEqual((out[1].index, out[1].kind, out[1].message), (1, "FunctionError", "b"))
        with self.assertRaises(shoal.ItemError):
            list(self.c.submit("fail", ["x"]).results())
        self.assertEqual(job.wait()["failed"], 2)

    def test_job_seen_and_canceled_from_another_node(self):
        job = self.c.submit("sleep", (20 for _ in range(100_000)), no_cache=True)
        try:
            other = shoal.Client(SEEDS[-1])
            try:
                # The other node hears of the job by gossip.
                deadline = time.monotonic() + 10
                while job.id not in [j["id"] for j in other.jobs()]:
                    self.assertLess(time.monotonic(), deadline, "the other node never listed the job")
                    time.sleep(0.05)
            finally:
                other.close()
        finally:
            final = job.cancel()
        self.assertEqual(final["state"], "canceled")
        self.assertLess(final["done"], 100_000)
        self.assertEqual(len(list(job.results())), final["done"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
