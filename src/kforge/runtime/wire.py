"""Messages between the judge and a sandbox: JSON headers over a pipe, tensors as raw files.

Nothing is ever unpickled: a tensor travels as a raw byte file plus (dtype, shape) in the JSON
header, so a hostile sandbox can send wrong numbers but never code to the judge.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import torch

_DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
    "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
MAX_MESSAGE_BYTES = 16 << 20

# How CUDA tensors travel between the judge and a sandbox. ``cuda_ipc``: by CUDA IPC handle, no copy
# through the host. ``host``: staged through a file in shared host memory (``staging_dir()``), copied to
# the GPU by the receiver; for container runtimes without working CUDA IPC (gVisor's GPU support has had
# gaps there). ``auto``: the judge tries ``cuda_ipc`` by a self-test at start and falls back to ``host``.
# CPU tensors always go through host memory, whatever the transport.
TRANSPORTS = ("auto", "cuda_ipc", "host")
TRANSPORT_ENV = "KFORGE_TRANSPORT"
STAGING_ENV = "KFORGE_STAGING_DIR"  # where ``host`` stages tensors (default: /dev/shm when roomy enough)
STAGING_MIN_FREE = 8 << 30  # a /dev/shm with less free (Docker's default is 64 MiB) is not used


def parse_transport(value: str | None) -> str:
    """The transport a user asked for (None or "" = auto); ValueError naming the choices otherwise."""
    name = (value or "auto").strip().lower().replace("-", "_")
    if name not in TRANSPORTS:
        raise ValueError(f"transport {value!r} is not one of {', '.join(TRANSPORTS)} "
                         f"(set by the executor's transport option or {TRANSPORT_ENV})")
    return name


def staging_dir() -> str | None:
    """A folder in shared host memory for the ``host`` transport: $KFORGE_STAGING_DIR, else /dev/shm if it
    is writable with at least 8 GiB free; None (the judge's own folder) otherwise."""
    chosen = os.environ.get(STAGING_ENV, "").strip()
    if chosen:
        return chosen
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    if st.f_bavail * st.f_frsize >= STAGING_MIN_FREE and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


def choose_transport(requested: str, device_type: str, self_test: Any) -> tuple[str, dict[str, Any]]:
    """Decide the transport at judge start. ``self_test(mode)`` returns None when a round trip of tensors
    in that mode came back right, else what went wrong. Returns (mode, the record every result carries).

    ``auto`` on a GPU tries ``cuda_ipc`` and falls back to ``host``; ``auto`` on the CPU is ``host`` (no
    CUDA tensor exists to share). A transport asked for by name must pass, else RuntimeError: a judge
    whose sandboxes can't receive tensors can judge nothing."""
    requested = parse_transport(requested)
    record: dict[str, Any] = {"requested": requested}
    if requested == "auto":
        tries = ["cuda_ipc", "host"] if device_type == "cuda" else ["host"]
    else:
        tries = [requested]
    failures: dict[str, str] = {}
    for mode in tries:
        problem = self_test(mode)
        if problem is None:
            record.update(mode=mode, self_test="passed")
            if failures:
                record["failed"] = failures
            if device_type != "cuda":
                record["note"] = "CPU device: every tensor goes through host memory"
            return mode, record
        failures[mode] = str(problem)[:500]
    raise RuntimeError("the judge could not pass tensors to its sandbox: "
                       + "; ".join(f"{m}: {why}" for m, why in failures.items())
                       + (" (try transport = \"host\")" if "host" not in failures else ""))


def dtype_from_name(name: str) -> torch.dtype:
    return _DTYPES[name]


class PayloadTooLarge(ValueError):
    """Tensors bigger than the receiver allows: refused from their headers, before a byte is read."""


def _dense_bytes(shape: Any, dtype: Any) -> int:
    numel = 1
    for s in shape:
        numel *= max(int(s), 0)
    return numel * torch.empty((), dtype=dtype_from_name(str(dtype))).element_size()


def declared_bytes(obj: Any) -> int:
    """What decoding a payload would read or copy, from its headers alone (never trusts a file's size).

    A CUDA tensor is copied into a tensor of its declared strides, so its strided extent counts too:
    a tiny shape with an enormous stride would otherwise allocate the stride's worth.
    """
    kind = obj.get("__kind__") if isinstance(obj, dict) else None
    if kind == "tensor" and not _restrided(obj):
        return _dense_bytes(obj["shape"], obj["dtype"])
    if kind in ("cuda_ipc", "tensor"):
        shape, stride = [int(s) for s in obj["shape"]], [int(s) for s in obj["stride"]]
        dense = _dense_bytes(shape, obj["dtype"])
        if not shape or dense == 0:
            return dense
        extent = 1 + sum((n - 1) * abs(st) for n, st in zip(shape, stride))
        return max(dense, extent * torch.empty((), dtype=dtype_from_name(str(obj["dtype"]))).element_size())
    if kind == "too_large":
        return max(int(obj.get("nbytes") or 0), 1)
    if kind in ("list", "tuple"):
        return sum(declared_bytes(x) for x in obj["items"])
    if kind == "dict":
        return sum(declared_bytes(x) for x in obj["items"].values())
    return 0


def _restrided(obj: dict[str, Any]) -> bool:
    """A CUDA tensor staged through host memory (the ``host`` transport) that was not contiguous: the
    receiver rebuilds its strides, as ``cuda_ipc`` would have kept them."""
    return obj.get("device") == "cuda" and obj.get("contiguous") is False and isinstance(obj.get("stride"), list)


class Channel:
    """One direction each way over raw pipe file descriptors, plus a folder for tensor payloads."""

    def __init__(self, read_fd: int, write_fd: int, payload_dir: str | Path, cuda_ipc: bool = True) -> None:
        from multiprocessing.connection import Connection

        self._rx = Connection(read_fd, writable=False)
        self._tx = Connection(write_fd, readable=False)
        self.payload_dir = Path(payload_dir)
        self._counter = 0
        self.cuda_ipc = cuda_ipc
        self._keep: list[torch.Tensor] = []  # CUDA tensors shared by handle: alive until the peer answers
        self._room: int | None = None  # bytes encode() may still write in this call (None: no cap)

    def release(self) -> None:
        """Drop CUDA tensors shared with the peer (call once the peer has answered)."""
        self._keep.clear()

    def send(self, header: dict[str, Any], tensors: Any = None) -> None:
        if tensors is not None:
            header = dict(header, payload=self.encode(tensors))
        self._tx.send_bytes(json.dumps(header).encode())

    def poll(self, timeout: float | None) -> bool:
        return self._rx.poll(timeout)

    def recv(self) -> dict[str, Any]:
        data = self._rx.recv_bytes(MAX_MESSAGE_BYTES)
        header = json.loads(data)
        if not isinstance(header, dict):
            raise ValueError("malformed message")
        return header

    def close(self) -> None:
        for conn in (self._rx, self._tx):
            try:
                conn.close()
            except OSError:
                pass

    # -- tensors ---------------------------------------------------------------------------
    def encode(self, obj: Any, max_bytes: int | None = None) -> Any:
        """Nested lists/tuples/dicts of tensors and plain values into JSON; tensors go to files.

        With ``max_bytes``, tensors past that many bytes in all are sent as a ``too_large`` header
        only: nothing is made contiguous, written or shared (a 2 GB output costs no disk or copy).
        """
        self._room = max_bytes
        try:
            return self._encode(obj)
        finally:
            self._room = None

    def _encode(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            if type(obj) is not torch.Tensor and not isinstance(obj, torch.nn.Parameter):
                return {"__kind__": "not_a_tensor", "type": type(obj).__name__}
            if obj.dtype not in _NAMES:
                return {"__kind__": "bad_dtype", "dtype": str(obj.dtype)}
            if self._room is not None:
                nbytes = obj.numel() * obj.element_size()
                if nbytes > self._room:
                    return {"__kind__": "too_large", "dtype": _NAMES[obj.dtype], "shape": list(obj.shape),
                            "nbytes": nbytes}
                self._room -= nbytes
            if obj.is_cuda and self.cuda_ipc:
                return self._encode_ipc(obj)
            self._counter += 1
            path = self.payload_dir / f"t{os.getpid()}_{self._counter}.bin"
            host = obj.detach()
            host = host.to("cpu").contiguous()
            raw = host.view(torch.uint8) if host.dim() > 0 and host.element_size() > 0 else host.reshape(1).view(torch.uint8)
            raw.numpy().tofile(path)
            return {"__kind__": "tensor", "file": path.name, "dtype": _NAMES[host.dtype],
                    "shape": list(obj.shape), "device": obj.device.type,
                    "contiguous": bool(obj.is_contiguous()), "stride": list(obj.stride())}
        if isinstance(obj, (list, tuple)):
            return {"__kind__": type(obj).__name__, "items": [self._encode(x) for x in obj]}
        if isinstance(obj, dict):
            return {"__kind__": "dict", "items": {str(k): self._encode(v) for k, v in obj.items()}}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return {"__kind__": "value", "value": obj}
        return {"__kind__": "unsupported", "type": type(obj).__name__}

    def _encode_ipc(self, t: torch.Tensor) -> dict[str, Any]:
        """A CUDA tensor by IPC handle: no copy through the host. The receiver clones it at once."""
        t = t.detach()
        storage = t._typed_storage()
        (dev, handle, size_b, offset_b, rc_handle, rc_offset, ev_handle, ev_sync) = storage._share_cuda_()
        self._keep.append(t)
        b64 = lambda x: None if x is None else base64.b64encode(bytes(x)).decode()  # noqa: E731
        return {"__kind__": "cuda_ipc", "dtype": _NAMES[t.dtype], "shape": list(t.shape), "stride": list(t.stride()),
                "offset": int(t.storage_offset()), "device": int(dev), "handle": b64(handle),
                "storage_bytes": int(size_b), "storage_offset_bytes": int(offset_b), "rc_handle": b64(rc_handle),
                "rc_offset": int(rc_offset), "event_handle": b64(ev_handle), "event_sync": bool(ev_sync),
                "contiguous": bool(t.is_contiguous())}

    def _decode_ipc(self, obj: dict[str, Any], device: str | torch.device | None) -> torch.Tensor:
        from torch.multiprocessing.reductions import rebuild_cuda_tensor

        unb64 = lambda x: None if x is None else base64.b64decode(str(x))  # noqa: E731
        dtype = dtype_from_name(str(obj["dtype"]))
        view = rebuild_cuda_tensor(
            torch.Tensor, torch.Size([int(s) for s in obj["shape"]]), tuple(int(s) for s in obj["stride"]),
            int(obj["offset"]), torch.storage.TypedStorage, dtype, int(obj["device"]), unb64(obj["handle"]),
            int(obj["storage_bytes"]), int(obj["storage_offset_bytes"]), False, unb64(obj["rc_handle"]),
            int(obj["rc_offset"]), unb64(obj["event_handle"]), bool(obj["event_sync"]))
        target = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
        # An owned copy: the peer can't change it afterwards, and the peer's memory is released.
        out = torch.empty_strided(view.shape, view.stride(), dtype=dtype, device=target) \
            if obj.get("contiguous") is False else torch.empty(view.shape, dtype=dtype, device=target)
        out.copy_(view)
        torch.cuda.synchronize(target)
        del view
        return out

    def decode(self, obj: Any, device: str | torch.device | None = None, max_bytes: int | None = None) -> Any:
        """Tensors and values back from ``encode``'s JSON. With ``max_bytes``, a payload whose headers
        declare more raises PayloadTooLarge before any file is read or memory is mapped or copied."""
        if max_bytes is not None:
            declared = declared_bytes(obj)
            if declared > max_bytes:
                raise PayloadTooLarge(f"the tensors declare {declared:,} bytes, more than the {max_bytes:,} allowed")
        return self._decode(obj, device)

    def _decode(self, obj: Any, device: str | torch.device | None) -> Any:
        kind = obj.get("__kind__") if isinstance(obj, dict) else None
        if kind == "cuda_ipc":
            return self._decode_ipc(obj, device)
        if kind == "tensor":
            name = str(obj["file"])
            if "/" in name or name.startswith("."):
                raise ValueError("payload names a path outside the channel folder")
            path = self.payload_dir / name
            dtype = dtype_from_name(str(obj["dtype"]))
            shape = [int(s) for s in obj["shape"]]
            numel = 1
            for s in shape:
                numel *= s
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            if path.stat().st_size != max(nbytes, 0):
                raise ValueError(f"payload {name} has {path.stat().st_size} bytes, expected {nbytes}")
            if nbytes == 0:
                t = torch.empty(shape, dtype=dtype)
            else:
                t = torch.from_file(str(path), shared=False, size=nbytes, dtype=torch.uint8).view(dtype).reshape(shape)
            path.unlink(missing_ok=True)
            if _restrided(obj) and device is not None and torch.device(device).type == "cuda":
                out = torch.empty_strided(t.shape, tuple(int(x) for x in obj["stride"]), dtype=dtype, device=device)
                out.copy_(t)
                return out
            return t.to(device) if device is not None else t
        if kind in ("list", "tuple"):
            items = [self._decode(x, device) for x in obj["items"]]
            return tuple(items) if kind == "tuple" else items
        if kind == "dict":
            return {k: self._decode(v, device) for k, v in obj["items"].items()}
        if kind == "too_large":  # the sender refused to write it: whatever the cap, nothing to read
            raise PayloadTooLarge(f"a tensor of shape {obj.get('shape')} ({obj.get('dtype')}, "
                                  f"{int(obj.get('nbytes') or 0):,} bytes) was over the sender's cap")
        if kind == "value":
            return obj["value"]
        if kind in ("not_a_tensor", "bad_dtype", "unsupported"):
            return _Foreign(kind, obj.get("type") or obj.get("dtype") or "?")
        raise ValueError(f"malformed payload: {str(obj)[:200]}")


class _Foreign:
    """Stands for a value the sandbox returned that is not a plain tensor or plain value."""

    def __init__(self, kind: str, what: str) -> None:
        self.kind, self.what = kind, what

    def __repr__(self) -> str:
        return f"<{self.kind}: {self.what}>"


Foreign = _Foreign
