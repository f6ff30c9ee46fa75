"""A Shoal client for Python: call the grid's functions and run map jobs.

One module, with Debian's python3-msgpack as its only dependency. It
speaks Shoal's msgpack-rpc over TCP to one node, the seed:

    import shoal
    with shoal.Client("127.0.0.1:7373") as c:
        print(c.call("square", 12))                       # 144
        for value in c.map("square", range(100000)):      # in input order
            ...
        for value in c.map("add", [[1, 2], [3, 4]]):      # argument lists
            ...

call() runs the function on the seed itself (it must offer it). map()
submits a job the seed coordinates across the whole grid (shoal.job.*):
the inputs go to it in batches, it keeps the results on its disk, and
map() reads them back in input order as they come. The job outlives this
process: a job's id (Job.id) can be waited on, read and canceled from
anywhere, with this module or `shoal jobs`.

TLS is not supported here; with a token, use it on a network you trust.
"""

import socket

import msgpack

__all__ = ["Client", "Job", "ShoalError", "ItemError"]

REQUEST, RESPONSE = 0, 1


class ShoalError(Exception):
    """An error a node answered: kind (UnknownFunction, BadArguments,
    FunctionError, Timeout, Overloaded, Unauthorized, Canceled,
    Unavailable, ...) and message."""

    def __init__(self, kind, message):
        super().__init__("%s: %s" % (kind, message))
        self.kind = kind
        self.message = message


class ItemError(ShoalError):
    """A map job's item failed; index is its position among the inputs."""

    def __init__(self, index, kind, message):
        super().__init__(kind, message)
        self.index = index

    def __str__(self):
        return "item %d: %s: %s" % (self.index, self.kind, self.message)


class Client:
    """A connection to one Shoal node, the seed ("HOST:PORT" of its RPC
    address). token is the grid's token, if it has one."""

    def __init__(self, seed="127.0.0.1:7373", token=None, timeout=60.0):
        host, _, port = seed.rpartition(":")
        self._sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._unpacker = msgpack.Unpacker(raw=False)
        self._next_id = 0
        if token is not None:
            self._call("shoal.auth", token)

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, *args):
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        msgid = self._next_id
        self._sock.sendall(msgpack.packb([REQUEST, msgid, method, list(args)], use_bin_type=True))
        while True:
            for msg in self._unpacker:
                if len(msg) != 4 or msg[0] != RESPONSE or msg[1] != msgid:
                    continue  # an answer to a call given up on
                error, result = msg[2], msg[3]
                if error is not None:
                    kind, sep, message = str(error).partition(": ")
                    if not sep or " " in kind:
                        kind, message = "Remote", str(error)
                    raise ShoalError(kind, message)
                return result
            data = self._sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the node closed the connection")
            self._unpacker.feed(data)

    def call(self, fn, *args):
        """Runs fn(*args) on the seed and returns its result."""
        return self._call(fn, *args)

    def members(self):
        """The members the seed knows, as dicts (name, rpc, state, ...)."""
        return self._call("shoal.members")

    def jobs(self):
        """The jobs the seed coordinates, then those it heard of."""
        return self._call("shoal.job.list")

    def submit(self, fn, inputs, batch=8192, **options):
        """Starts a map job of fn that the seed coordinates and sends it
        the inputs: a range (sent as one, not item by item) or an iterable
        of argument lists or single arguments. options are those of
        shoal.job.submit: attempts, timeout_ms, chunk, no_cache, hedge,
        owner. Returns the Job once every input is sent."""
        spec = dict(options, function=fn)
        spec.setdefault("owner", "python (%s)" % socket.gethostname())
        if isinstance(inputs, range) and inputs.step != 0:
            spec["range"] = [inputs.start, inputs.stop, inputs.step]
            return Job(self, self._call("shoal.job.submit", spec))
        job = Job(self, self._call("shoal.job.submit", spec))
        try:
            pending = []
            for value in inputs:
                pending.append(list(value) if isinstance(value, (list, tuple)) else [value])
                if len(pending) >= batch:
                    self._call("shoal.job.append", job.id, pending)
                    pending = []
            if pending:
                self._call("shoal.job.append", job.id, pending)
            self._call("shoal.job.close", job.id)
        except BaseException:
            job.cancel()  # a job on part of its inputs is not what was asked for
            raise
        return job

    def map(self, fn, inputs, **options):
        """Runs fn over inputs as a grid job and yields the results in
        input order; a failed item raises ItemError. See submit."""
        return self.submit(fn, inputs, **options).results()


class Job:
    """A job the seed coordinates."""

    def __init__(self, client, job_id):
        self.client = client
        self.id = job_id

    def status(self):
        """The job's state and counts, as a dict (state, done, total, ...)."""
        return self.client._call("shoal.job.status", self.id)

    def cancel(self):
        """Cancels the job on every node; returns its final status."""
        return self.client._call("shoal.job.cancel", self.id)

    def wait(self, poll_ms=1000):
        """Waits until the job has ended and returns its final status."""
        while True:
            status = self.status()
            if status["state"] != "running":
                return status
            self.client._call("shoal.job.results", self.id, status["done"], 0, poll_ms)

    def results(self, start=0, errors="raise"):
        """Yields the job's results in input order from index start,
        waiting for each while the job runs. A failed item raises
        ItemError, or with errors="return" is yielded as one."""
        index = start
        while True:
            page = self.client._call("shoal.job.results", self.id, index, 65536, 10000)
            for r in page["results"] or ():
                err = r.get("error")
                if err is not None:
                    e = ItemError(r["index"], err.get("kind", "Remote"), err.get("message", ""))
                    if errors == "raise":
                        raise e
                    yield e
                else:
                    yield r["value"]
            index = page["next"]
            if page["end"]:
                return
