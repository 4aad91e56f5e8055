"""Cost measurement for benchmarks: interleaved timing against a baseline, allocator peaks, the device."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch._C._profiler import _EventType, _ProfilerEvent
from torch.profiler import ProfilerActivity, profile, record_function


def describe_device(device: torch.device) -> str:
    """The hardware in words, e.g. ``"cpu: Intel(R) Xeon(R) Processor, 1 of 2 cores used"``."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"cpu: {name}, {torch.get_num_threads()} thread(s) of {os.cpu_count()} cores"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call of ``fn`` (synchronised on CUDA)."""
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - start


@dataclass
class Ratio:
    """Median of per-repeat time ratios (method / baseline) and its spread."""

    median: float
    q25: float
    q75: float
    method_seconds: float
    baseline_seconds: float


def interleaved_ratio(
    baseline: Callable[[], object],
    prepare: Callable[[], Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int = 1,
) -> Ratio:
    """Time ``baseline`` and a method alternately (baseline, method, baseline, ...).

    ``prepare()`` runs untimed and returns the timed call (e.g. it does the step's
    forward pass, and the returned call does one hypergradient estimate). The ratio
    of each adjacent pair is recorded, and the median over ``repeats`` after
    ``warmup`` discarded pairs is reported, so slow drifts of a shared machine
    cancel.
    """
    ratios: list[float] = []
    method_times: list[float] = []
    baseline_times: list[float] = []
    for i in range(warmup + repeats):
        base = timed(baseline, device)
        call = prepare()
        spent = timed(call, device)
        if i >= warmup:
            ratios.append(spent / base)
            method_times.append(spent)
            baseline_times.append(base)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return Ratio(
        median=statistics.median(ratios),
        q25=quartiles[0],
        q75=quartiles[2],
        method_seconds=statistics.median(method_times),
        baseline_seconds=statistics.median(baseline_times),
    )


def peak_extra_bytes(
    prepares: Sequence[Callable[[], Callable[[], object]]], device: torch.device
) -> list[int]:
    """Peak tensor memory allocated by each measured call above what was live before it.

    Each item of ``prepares`` runs untimed and unmeasured and returns the call to
    measure (so set-up such as a forward pass stays out of the figure). Garbage is
    collected before each call, so that no collection inside it frees earlier tensors.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset, minus the memory allocated
    before the call. CPU: the PyTorch CPU allocator's allocations and frees recorded by
    ``torch.profiler`` (``profile_memory=True``, one session for all calls, each call
    between two empty marker ranges), in order: the bytes of the tensors allocated by
    the call and not yet freed, at their maximum. A free is matched to its allocation by
    address, so freeing a tensor from before the call does not count (the allocator
    reports such frees only with sizes it may have kept from earlier sessions, which
    would make the figure depend on address reuse).
    Counts tensors only (not Python objects or pages the allocator keeps), so the figure
    depends neither on the machine's load nor on the heap's history.
    """
    if device.type == "cuda":
        peaks = []
        for prepare in prepares:
            call = prepare()
            gc.collect()
            _synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            start = torch.cuda.memory_allocated(device)
            call()
            _synchronize(device)
            peaks.append(int(torch.cuda.max_memory_allocated(device) - start))
        return peaks
    with _without_profiler_markers(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for i, prepare in enumerate(prepares):
            call = prepare()
            gc.collect()
            _mark(f"{_MARK}.{i}.start")
            call()
            _mark(f"{_MARK}.{i}.end")
    assert prof.profiler is not None and prof.profiler.kineto_results is not None
    events = sorted(_walk(prof.profiler.kineto_results.experimental_event_tree()), key=_start_ns)
    peaks = []
    for i in range(len(prepares)):
        opening, closing = f"{_MARK}.{i}.start", f"{_MARK}.{i}.end"
        inside = False
        live: dict[int, int] = {}
        total = peak = 0
        for event in events:
            if event.name in (opening, closing):
                inside = event.name == opening
                continue
            typed = event.typed
            if not inside or typed[0] != _EventType.Allocation or typed[1].device.type != "cpu":
                continue
            allocation = typed[1]
            if allocation.alloc_size > 0:
                live[allocation.ptr] = allocation.alloc_size
                total += allocation.alloc_size
                peak = max(peak, total)
            else:
                total -= live.pop(allocation.ptr, 0)
        peaks.append(peak)
    return peaks


def _walk(events: Iterable[_ProfilerEvent]) -> Iterator[_ProfilerEvent]:
    for event in events:
        yield event
        yield from _walk(event.children)


def _start_ns(event: _ProfilerEvent) -> int:
    return event.start_time_ns


def peak_measure(device: torch.device) -> str:
    """What :func:`peak_extra_bytes` counts on ``device``, in words (for results files)."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated - memory_allocated before the step (tensor bytes)"
    return "peak bytes of the tensors the step allocated and had not freed (CPU allocator, torch.profiler)"


_MARK = "bilevel_mtl.peak_extra_bytes"
_PROFILER_MARKERS = re.compile(rb"USDT:.*\] profiler_(start|stop)\s*")


@contextlib.contextmanager
def _without_profiler_markers() -> Iterator[None]:
    """Drop the ``USDT: ... profiler_start`` / ``profiler_stop`` lines libkineto writes to stderr.

    They are logged above its ERROR level, so no ``KINETO_LOG_LEVEL`` hides them alone (and the
    level is read once per process). Instead file descriptor 2 goes to a temporary file while
    the profiler runs, and every other line is written back to stderr after it.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().splitlines(keepends=True)
            kept = b"".join(line for line in lines if not _PROFILER_MARKERS.fullmatch(line))
            while kept:
                kept = kept[os.write(2, kept) :]


def _mark(name: str) -> None:
    """An empty profiler range: a timestamp that encloses no allocation or free."""
    with record_function(name):
        pass
