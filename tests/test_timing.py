"""The timing helpers every measurement shares (ghostsr_plugin.utils.timing): interleaved timing alternates the order
of the functions it times, counts every call, and runs under the project's malloc settings."""
from ghostsr_plugin.utils import timing


def test_interleaved_alternates_the_order_and_counts_every_call():
    calls, ticks = [], []

    class Bar:
        def update(self):
            ticks.append(1)

    fns = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}
    times = timing.interleaved(lambda fn: fn() or 1.0, fns, reps=3, warmup=1, progress=Bar())
    assert calls == ['a', 'b', 'a', 'b', 'b', 'a', 'a', 'b']
    assert times == {'a': [1.0] * 3, 'b': [1.0] * 3} and len(ticks) == 8


def test_interleaved_times_under_the_tuned_allocator(monkeypatch):
    """Every interleaved timing first applies the glibc malloc settings (so a network's time does not depend on the
    page faults its neighbour in the order leaves), before the first call."""
    events = []
    monkeypatch.setattr(timing, 'tune_malloc', lambda: events.append('tune') or True)
    timing.interleaved(lambda fn: fn() or 1.0, {'a': lambda: events.append('a')}, reps=1, warmup=0)
    assert events == ['tune', 'a']
