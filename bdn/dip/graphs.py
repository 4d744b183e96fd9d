"""CUDA helpers of the DIP loop: replaying one iteration as a CUDA graph, and cuDNN's autotuning for a fit.

On a GPU the DIP loop is bound by launching hundreds of small kernels, not by arithmetic. The loop
(`bdn.dip.fit.DipFit`) is written without host syncs and with fixed buffers so that one iteration's device work
can be captured once and replayed; `GraphedIteration` does that. Nothing here runs on the CPU.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch

__all__ = ["GraphedIteration", "cudnn_autotune"]


def cudnn_autotune(device: torch.device) -> contextlib.AbstractContextManager:
    """On CUDA, cuDNN's benchmark mode for the duration (the flags are restored after); elsewhere nothing.

    One image size for the whole fit: cuDNN's search for its fastest algorithms pays for itself.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    return cudnn.flags(
        enabled=cudnn.enabled, benchmark=True, deterministic=cudnn.deterministic, allow_tf32=cudnn.allow_tf32
    )


class GraphedIteration:
    """Runs an iteration's device work (`work`, after `zero_grad`) as one CUDA graph after a few eager warm-ups.

    Measured with fit_dip on an H100 (colour, torch 2.11), eager -> graph, ms an iteration: 'skip' 256x256
    14.7 -> 4.6, 512x512 15.5 -> 13.6 (there the arithmetic dominates); 'skip_light' 256x256 12.5 -> 2.2,
    512x512 10.8 -> 4.4. With graphs, a judge that reads its variance every iteration (WMV, sync_every=1) cost
    under 1 %. The first iterations run eagerly on a side stream (cuDNN picks its algorithms, lazy state is
    made), the next one is captured and every later one replays it. If capture fails, the fit goes on eagerly
    with a warning. `generator` is the loop's own noise generator: the graph must advance it on each replay.
    """

    warmup = 3

    def __init__(
        self,
        device: torch.device,
        work: Callable[[bool], None],
        zero_grad: Callable[[], None],
        generator: torch.Generator,
    ) -> None:
        self.device, self.work, self.zero_grad, self.generator = device, work, zero_grad, generator
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager = False
        self.done = 0

    def step(self, first: bool) -> None:
        """One iteration; `first` is true for the fit's first iteration (it starts the EMA)."""
        if self.graph is not None:
            self.graph.replay()
        elif self.eager or self.done < self.warmup:
            self._eager(first)
        else:
            self._capture()
        self.done += 1

    def _eager(self, first: bool) -> None:
        if self.eager:  # capture failed: plain eager iterations from now on
            self.zero_grad()
            self.work(first)
            return
        # Warm-up runs on a side stream, as torch.cuda.graphs asks: capture then sees the same lazy state.
        side = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            self.zero_grad()
            self.work(first)
        current.wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            graph.register_generator_state(self.generator)  # our own generator must advance on each replay
            self.zero_grad()  # the captured backward then writes fresh gradients
            with torch.cuda.graph(graph):
                self.work(False)
        except (RuntimeError, AttributeError) as error:
            warnings.warn(f"CUDA graph capture failed, running eagerly: {error}", RuntimeWarning, stacklevel=4)
            self.eager = True
            torch.cuda.synchronize(self.device)
            self._eager(False)
            return
        self.graph = graph
        graph.replay()  # capturing recorded the work without doing it
