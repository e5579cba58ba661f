"""A side CUDA stream: one piece of a pass runs beside the current stream's work until its result is used.

In a full pass SAM's image encoder needs only the frame, and the LLM half (vision tower, LLM,
fusion) needs nothing from SAM until the mask decoder. `SideStream.launch` issues the encoder's
kernels on a side stream, after everything the current stream had queued (so the uploaded pixels are
ready), and returns at once; the caller goes on issuing the LLM's kernels on the current stream, and
`Launched.result()` makes the current stream wait for the side stream before the result is used.

Memory: the inputs given as `reads` are marked as used on the side stream and the result's tensors as
used on the current stream (`Tensor.record_stream`), so the caching allocator does not hand their
memory to other work before the stream that reads them is done with it.

Where no side stream runs (the CPU, or disabled) `launch` runs the work inline and `result()` returns
it: the same calls in the same order as on CUDA, so that path's results are checked on the CPU.
Work whose host side blocks (a backend that copies through host memory) overlaps nothing but still
gives the same result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


def tensors_in(value: object) -> Iterator[torch.Tensor]:
    """The tensors of a result: itself, the items of a list/tuple, or a dataclass's fields (one level)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, torch.Tensor):
                yield item
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if isinstance(item, torch.Tensor):
                yield item


class Launched(Generic[T]):
    """Work issued on a side stream (or already done inline); `result()` joins it into the current stream."""

    def __init__(self, value: T, stream: torch.cuda.Stream | None, device: torch.device) -> None:
        self._value = value
        self._stream = stream
        self._device = device

    def result(self) -> T:
        """The work's result, usable on the current stream: the current stream waits for the side stream
        (the host does not), and the result's CUDA tensors are marked as used on the current stream."""
        if self._stream is not None:
            current = torch.cuda.current_stream(self._device)
            current.wait_stream(self._stream)
            for t in tensors_in(self._value):
                if t.is_cuda:
                    t.record_stream(current)
            self._stream = None  # joined once; later calls return the value
        return self._value


class SideStream:
    """One side CUDA stream of a device, made once and reused; on the CPU, or with `enabled` False, none
    (`launch` then runs inline)."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if enabled and device.type == "cuda" else None

    @property
    def active(self) -> bool:
        """Whether work is really issued on a side stream."""
        return self.stream is not None

    def launch(self, work: Callable[[], T], reads: Iterable[torch.Tensor] = ()) -> Launched[T]:
        """Issue `work()` on the side stream after what the current stream has queued; `reads`: CUDA
        tensors made on the current stream that the work reads (kept from reuse until it is done)."""
        if self.stream is None:
            return Launched(work(), None, self.device)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        for t in reads:
            if t.is_cuda:
                t.record_stream(self.stream)
        with torch.cuda.stream(self.stream):
            value = work()
        return Launched(value, self.stream, self.device)
