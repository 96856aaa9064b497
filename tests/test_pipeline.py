import threading
import time

from agent.model import Sample
from agent.outputs.memory import MemoryBuffer
from agent.outputs.running import OK, RunningOutput, TransportError, Writer
from agent.pipeline import Pipeline


class Mem:
    def __init__(self, name="mem", fail=0, block: threading.Event | None = None):
        self.name = name
        self.got: list[Sample] = []
        self.fail = fail
        self.block = block
        self.closed = False

    def write(self, samples):
        if self.block is not None:
            self.block.wait(30)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("server down")
        self.got.extend(samples)

    def housekeeping(self):
        pass

    def stats(self):
        return {}

    def close(self):
        self.closed = True


class MemWriter(Writer):
    """Mem as a writer of the shared sender: its exception is the destination not answering."""

    def __init__(self, mem: Mem) -> None:
        self.mem = mem

    def encode(self, samples):
        return samples

    def write(self, records):
        try:
            self.mem.write(records)
        except ConnectionError as e:
            raise TransportError(str(e)) from None
        return OK

    def describe(self, record):
        return repr(record)

    def close(self):
        self.mem.close()

    def stats(self):
        return self.mem.stats()


def queued(out: Mem, capacity: int, batch_size: int = 5000, retry_base: float = 0.5) -> RunningOutput:
    """A memory-buffered output over Mem, as the local store is."""
    return RunningOutput(out.name, MemWriter(out), MemoryBuffer(capacity, out.name), batch_size=batch_size,
                         flush_interval=0.05, retry_base=retry_base, retry_max=0.05, eager=True)


def samples(n, start=0):
    return [Sample("m", {}, {"i_count": i}, i) for i in range(start, start + n)]


def test_full_queue_drops_oldest_and_counts_exactly():
    out = Mem()
    q = queued(out, capacity=100)  # not started: nothing drains
    q.append(samples(70))
    q.append(samples(70, 70))
    assert len(q.buffer) == 100 and q.buffer.dropped == 40
    q.start()
    assert q.stop(5)
    assert [s.fields["i_count"] for s in out.got] == list(range(40, 140))
    assert out.closed


def test_failed_writes_keep_samples_and_retry():
    out = Mem(fail=2)
    q = queued(out, capacity=1000, retry_base=0.01)
    q.start()
    q.append(samples(10))
    assert q.flush(5)
    assert [s.fields["i_count"] for s in out.got] == list(range(10))
    assert q.write_errors == 2 and q.last_error is None
    q.stop(1)


def test_a_stuck_output_never_stalls_another():
    gate = threading.Event()
    slow, fast = Mem("slow", block=gate), Mem("fast")
    p = Pipeline([queued(slow, 50), queued(fast, 50)])
    p.start()
    slow_q, fast_q = p.outputs
    for i in range(10):
        p.publish(samples(10, i * 10))  # returns at once although "slow" is stuck
        assert fast_q.flush(5)  # and "fast" keeps writing meanwhile
    assert len(fast.got) == 100 and fast_q.buffer.dropped == 0
    assert slow_q.buffer.dropped > 0 and not slow.got  # bounded: the stuck one drops its oldest, counted
    gate.set()
    assert p.stop(5)
    assert len(slow.got) + slow_q.buffer.dropped >= 100


def test_samples_evicted_while_writing_are_not_counted_twice():
    gate = threading.Event()
    out = Mem(block=gate)
    q = queued(out, capacity=10, batch_size=10)
    q.start()
    q.append(samples(10))
    time.sleep(0.1)  # the writer has taken the batch and is blocked inside write()
    q.append(samples(5, 10))  # evicts 5 of the batch being written
    gate.set()
    assert q.stop(5)
    assert q.buffer.dropped == 5
    assert [s.fields["i_count"] for s in out.got] == list(range(15))


class PipelinedMemWriter(MemWriter):
    pipelined = True


def test_a_memory_buffer_hands_each_batch_out_once_to_a_sender_that_takes_the_next_early():
    """A pipelined sender takes batch 2 while batch 1 is written: the memory buffer hands out what is not out
    already, and a failed write gives back both, first in line: every sample once, in order."""
    out = Mem(fail=1)
    q = RunningOutput(out.name, PipelinedMemWriter(out), MemoryBuffer(1000, out.name), batch_size=10,
                      flush_interval=0.05, retry_base=0.01, retry_max=0.05, eager=True)
    q.append(samples(50))
    q.start()
    assert q.flush(10)
    assert q.stop(5)
    assert [s.fields["i_count"] for s in out.got] == list(range(50))
    assert q.write_errors == 1 and len(q.buffer) == 0


def test_a_memory_buffer_peeks_past_what_is_out_and_gives_it_back_on_release():
    buf = MemoryBuffer(100)
    buf.append(list(range(25)))
    first, second = buf.peek(10)[1], buf.peek(10)[1]
    assert first == list(range(10)) and second == list(range(10, 20))
    buf.release()
    ids, again = buf.peek(10)
    assert again == list(range(10))
    assert buf.remove(ids) == 10 and buf.peek(30)[1] == list(range(10, 25))
