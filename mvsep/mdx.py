"""MDX-Net inference window by window, on the exact grid of the original `demix_full` / `demix_base`.

`demix_full` walks chunks of C samples every int(C * (1 - overlap)) samples and box-averages them; each chunk
goes through `demix_base`, which zero-pads it (by `trim` on both sides and up to a multiple of `gen`) and cuts
it into pieces of `CHUNK` samples every `gen`. Here the pieces of consecutive chunks are read on demand and run
through ONNX Runtime in batches; a chunk is assembled when its last piece is back, averaged in an `OverlapAdd`,
and handed on once no later chunk covers it. On CUDA every batch has the same shape (the last one is padded
with silent pieces), so cuDNN picks its algorithms once, and the spectrograms stay on the GPU (`onnx_io`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .device import Backoff, KernelClock, batch_book, batch_size_for, free_caches, to_device
from .onnx_io import run_batch
from .signals import OverlapAdd, Reader

N_FFT, HOP, DIM_F, DIM_T = 7680, 1024, 3072, 256
N_BINS = N_FFT // 2 + 1          # 3841
CHUNK = HOP * (DIM_T - 1)        # 261120 samples per piece
TRIM = N_FFT // 2                # 3840
GEN = CHUNK - 2 * TRIM           # 253440 new samples per piece
CUTOFF_HZ = DIM_F * 44100 / N_FFT  # 17640: everything above is zero in MDX outputs
PIECE_BYTES = 512 << 20  # rough device memory of one piece through a full-size MDX-Net (activations, STFT)


def chunk_grid(length: int, chunk_size: int, overlap: float) -> list[tuple[int, int]]:
    step = int(chunk_size * (1 - overlap))
    if step < 1:
        raise ValueError(f"chunk_size {chunk_size} with overlap {overlap} leaves no step")
    return [(s, min(s + chunk_size, length)) for s in range(0, length, step)]


def pieces_of(n: int) -> int:
    pad = GEN - n % GEN  # a whole extra gen when n is a multiple of it, as the original does
    return (n + pad) // GEN


def piece_count(length: int, chunk_size: int, overlap: float) -> int:
    return sum(pieces_of(e - s) for s, e in chunk_grid(length, chunk_size, overlap))


def model_key(session) -> str:
    """Batch sizes are kept per model: its file name (every MDX-Net here has the same piece size)."""
    return f"mdx {getattr(session, 'mvsep_name', 'model')}"


class MdxRunner:
    def __init__(self, device: torch.device, batch_pieces: int | None = None):
        """`batch_pieces`: a fixed batch size; None: chosen per model from free device memory and learned."""
        self.device = device
        self.window = torch.hann_window(N_FFT, periodic=True, device=device)
        self.book = batch_book(device, "mdx", batch_pieces)
        self.fixed_shapes = device.type == "cuda"  # pad the last batch: cuDNN picks algorithms per shape
        self.backoff: Backoff | None = None  # the one of the model that ran last
        self.clock = KernelClock()  # time inside STFT, model and iSTFT (the kernels), for bench/

    def run(self, session, reader: Reader, length: int, chunk_size: int, overlap: float,
            emit: Callable[[int, np.ndarray], None], step: Callable[[int], None] = lambda n: None) -> None:
        """Compute M(session, x, C, overlap) of the signal `reader` ([n, 2] frames) and hand it to
        `emit(start, [2, n])` piece by piece, in order."""
        free_caches(self.device)  # what torch cached for the demucs pass before is ONNX Runtime's now
        backoff = self.backoff = self.book.get(model_key(session), lambda: batch_size_for(self.device,
                                                                                          PIECE_BYTES, 4))
        chunks = chunk_grid(length, chunk_size, overlap)
        ola = OverlapAdd(emit, length, self.device)
        ones = torch.ones(max(e - s for s, e in chunks), device=self.device)  # the box average's weights
        todo = [(c, p) for c, (s, e) in enumerate(chunks) for p in range(pieces_of(e - s))]
        done: dict[int, list[torch.Tensor]] = {}
        seen = [backoff.ooms]
        i = 0
        while i < len(todo):
            group = todo[i:i + backoff.size]
            last = i + len(group) >= len(todo)

            def forward(g, last=last):
                shrink = last or backoff.ooms != seen[0]  # give the arena back after the pass or an OOM
                seen[0] = backoff.ooms
                return self._forward(session, reader, chunks, g, backoff.size, shrink)

            outs = backoff.run(group, forward)
            upto = None
            for (c, _), out in zip(group, outs):
                done.setdefault(c, []).append(out)
                s, e = chunks[c]
                if len(done[c]) == pieces_of(e - s):
                    ola.add(s, torch.cat(done.pop(c), 1)[:, :e - s], ones[:e - s])
                    upto = chunks[c + 1][0] if c + 1 < len(chunks) else length
            if upto is not None:  # once per batch: the chunks it finished leave the device together
                ola.flush(upto)
            step(len(group))
            i += len(group)

    @property
    def model_seconds(self) -> float:
        return self.clock.seconds

    def _forward(self, session, reader: Reader, chunks, group, batch: int, shrink: bool) -> list[torch.Tensor]:
        pieces = []
        for c, p in group:
            s, e = chunks[c]
            a = s - TRIM + p * GEN  # the piece in signal coordinates; zeros outside its own chunk
            x = reader(a, a + CHUNK)
            x[:max(0, s - a)] = 0
            x[max(0, e - a):] = 0
            pieces.append(x.T)
        if self.fixed_shapes:  # one input shape per batch size: pad with silent pieces
            pieces += [np.zeros_like(pieces[0])] * (batch - len(pieces))
        began = self.clock.start(self.device)
        x = to_device(pieces, self.device)
        y = self.istft(run_batch(session, self.stft(x), shrink))[:len(group), :, TRIM:-TRIM]
        self.clock.stop(self.device, began)
        return list(y)  # on the device: the overlap-add runs there

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        """[P, 2, CHUNK] -> [P, 4, DIM_F, DIM_T], channels L_re, L_im, R_re, R_im."""
        p = x.shape[0]
        z = torch.stft(x.reshape(-1, CHUNK), N_FFT, HOP, window=self.window, center=True, return_complex=True)
        z = torch.view_as_real(z).permute(0, 3, 1, 2).reshape(p, 4, N_BINS, DIM_T)
        return z[:, :, :DIM_F]

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """[P, 4, DIM_F, DIM_T] -> [P, 2, CHUNK]; bins above DIM_F are zero."""
        p = spec.shape[0]
        pad = torch.zeros(p, 4, N_BINS - DIM_F, DIM_T, device=spec.device, dtype=spec.dtype)
        z = torch.cat([spec, pad], 2).reshape(p * 2, 2, N_BINS, DIM_T).permute(0, 2, 3, 1).contiguous()
        y = torch.istft(torch.view_as_complex(z), N_FFT, HOP, window=self.window, center=True)
        return y.reshape(p, 2, CHUNK)
