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


def dtype_from_name(name: str) -> torch.dtype:
    return _DTYPES[name]


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
    def encode(self, obj: Any) -> Any:
        """Nested lists/tuples/dicts of tensors and plain values into JSON; tensors go to files."""
        if isinstance(obj, torch.Tensor):
            if type(obj) is not torch.Tensor and not isinstance(obj, torch.nn.Parameter):
                return {"__kind__": "not_a_tensor", "type": type(obj).__name__}
            if obj.dtype not in _NAMES:
                return {"__kind__": "bad_dtype", "dtype": str(obj.dtype)}
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
            return {"__kind__": type(obj).__name__, "items": [self.encode(x) for x in obj]}
        if isinstance(obj, dict):
            return {"__kind__": "dict", "items": {str(k): self.encode(v) for k, v in obj.items()}}
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

    def decode(self, obj: Any, device: str | torch.device | None = None) -> Any:
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
            return t.to(device) if device is not None else t
        if kind in ("list", "tuple"):
            items = [self.decode(x, device) for x in obj["items"]]
            return tuple(items) if kind == "tuple" else items
        if kind == "dict":
            return {k: self.decode(v, device) for k, v in obj["items"].items()}
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
