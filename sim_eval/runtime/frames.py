"""Shared memory between the batched policy server and a worker slot: the slot's pre-processed images, written once by
the worker and read in place by the server, so an observation's pixels are not pickled, piped and unpickled (the pipe
carries the request's small metadata: tokens, pixel MAE, sequence number).

One ``FrameBuffer`` per worker slot, created by the server once its engine says how large an image is, unlinked by it
when it exits. The header holds the writer's token and the request's sequence number, written after the images: a
worker writes a request's images, then sends its message on the pipe, and writes again only after the answer, so the
server reads a request's images while they stay put. The one writer that does not wait is a dead worker's successor
on the same slot; the server checks the header against the message it is serving (``read``), and a request whose
images a successor has begun to overwrite during its batch belongs to a worker that is gone: its answer is dropped
(the successor's token differs) and its controller replaced (the successor resets the slot first).
"""

from __future__ import annotations

import secrets
from multiprocessing import shared_memory

import numpy as np
import torch

HEADER = 2  # uint64: [writer token, sequence number]


def token_id(token: str) -> int:
    """A client's hex token as the header's 64-bit number."""
    return int(token, 16) & 0xFFFFFFFFFFFFFFFF


class FrameBuffer:
    """Room for ``max_cameras`` float32 (3, size, size) images behind a header; ``create`` makes a new segment, else
    ``name`` is attached (the worker's side)."""

    def __init__(self, max_cameras: int, size: int, name: str | None = None):
        self.max_cameras, self.size = max_cameras, size
        nbytes = HEADER * 8 + max_cameras * 3 * size * size * 4
        if name is None:
            self.shm = shared_memory.SharedMemory(f"sim_eval_{secrets.token_hex(6)}", create=True, size=nbytes)
        else:
            self.shm = shared_memory.SharedMemory(name)
        self.header = np.ndarray((HEADER,), np.uint64, self.shm.buf)
        self.images = np.ndarray((max_cameras, 3, size, size), np.float32, self.shm.buf, offset=HEADER * 8)

    @property
    def name(self) -> str:
        return self.shm.name

    def write(self, token: str, seq: int, images: torch.Tensor) -> None:
        """A request's (n, 3, size, size) images, then the header that names the request."""
        n = images.shape[0]
        if n > self.max_cameras or tuple(images.shape[1:]) != (3, self.size, self.size):
            raise ValueError(f"frame buffer holds up to {self.max_cameras} images of (3, {self.size}, {self.size}), "
                             f"got {tuple(images.shape)}")  # fmt: skip
        self.header[1] = 0  # no request's images while they change
        self.images[:n] = images.numpy()
        self.header[0] = token_id(token)
        self.header[1] = seq

    def read(self, token: str, seq: int, n: int) -> torch.Tensor | None:
        """Request ``seq`` of ``token``'s ``n`` images, in place (valid until that worker's next request), or None
        when the buffer holds another request's."""
        if int(self.header[0]) != token_id(token) or int(self.header[1]) != seq:
            return None
        return torch.from_numpy(self.images[:n])

    def close(self, unlink: bool = False) -> None:
        del self.header, self.images  # views into the segment: it cannot close while they live
        try:
            self.shm.close()
        except BufferError:  # a tensor of the last batch still views it: the mapping goes with the process
            pass
        if unlink:
            self.shm.unlink()
