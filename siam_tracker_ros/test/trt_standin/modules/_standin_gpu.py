"""
A simulated GPU for the stand-in ``tensorrt`` and ``cuda`` modules.

Device memory lives in a fake address range (256-byte aligned blocks backed by bytearrays),
so a device address can never be dereferenced on the host by mistake; page-locked host memory
is real host memory. Work queued on a stream runs when the stream is synchronised (legacy
default stream semantics for stream 0), so reading a host buffer before the synchronise gives
stale data, as on a GPU. Every copy is bounds-checked against the allocation it touches.
"""
import ctypes
import threading
from typing import Callable, Dict, List

DEVICE_COUNT = 1
DEVICE_NAME = b'Orin'
CAPABILITY = (8, 7)
ALIGN = 256
DEVICE_BASE = 0x7F0000000000


class GpuError(Exception):
    """A CUDA error: ``code`` is the cudaError_t member name."""

    def __init__(self, code: str, message: str):
        super().__init__(f'{code}: {message}')
        self.code = code


class _State:
    def __init__(self):
        self.device: Dict[int, bytearray] = {}
        self.host: Dict[int, ctypes.Array] = {}
        self.streams: Dict[int, List[Callable[[], None]]] = {0: []}
        self.next_address = DEVICE_BASE
        self.next_stream = 0x1000
        self.thread = threading.local()


STATE = _State()


def reset() -> None:
    """Forget every allocation and stream."""
    global STATE
    STATE = _State()


def current_device() -> int:
    """Return the calling thread's device (0 until cudaSetDevice, as in the runtime API)."""
    return getattr(STATE.thread, 'device', 0)


def set_device(device: int) -> None:
    """Make ``device`` current on the calling thread."""
    if not 0 <= device < DEVICE_COUNT:
        raise GpuError('cudaErrorInvalidDevice', f'device {device} does not exist')
    STATE.thread.device = device


def malloc(nbytes: int) -> int:
    """Allocate device memory; return its address."""
    if nbytes <= 0:
        raise GpuError('cudaErrorInvalidValue', f'size {nbytes}')
    address = STATE.next_address
    STATE.next_address += (nbytes + ALIGN - 1) // ALIGN * ALIGN + ALIGN  # a gap between blocks
    STATE.device[address] = bytearray(nbytes)
    return address


def free(address: int) -> None:
    """Free device memory from ``malloc`` (waits for queued work first, as cudaFree does)."""
    if address not in STATE.device:
        raise GpuError('cudaErrorInvalidValue', f'{address:#x} is not an allocation')
    synchronize(0)
    del STATE.device[address]


def is_device(address: int) -> bool:
    """Tell whether ``address`` lies in the device address range."""
    return address >= DEVICE_BASE


def _block(address: int, nbytes: int):
    for base, block in STATE.device.items():
        if base <= address < base + len(block):
            if address + nbytes > base + len(block):
                raise GpuError('cudaErrorInvalidValue',
                               f'{nbytes} bytes at {address:#x} run past the end of the '
                               f'{len(block)}-byte allocation at {base:#x}')
            return block, address - base
    raise GpuError('cudaErrorInvalidValue', f'{address:#x} is not device memory')


def check_device_range(address: int, nbytes: int) -> None:
    """Raise GpuError unless ``nbytes`` at ``address`` lie inside one device allocation."""
    _block(address, nbytes)


def read(address: int, nbytes: int) -> bytes:
    """Bytes of device memory."""
    block, offset = _block(address, nbytes)
    return bytes(block[offset:offset + nbytes])


def write(address: int, data: bytes) -> None:
    """Store bytes into device memory."""
    block, offset = _block(address, len(data))
    block[offset:offset + len(data)] = data


def malloc_host(nbytes: int) -> int:
    """Page-locked host memory (real host memory); return its address."""
    buffer = ctypes.create_string_buffer(max(nbytes, 1))
    address = ctypes.addressof(buffer)
    STATE.host[address] = buffer
    return address


def free_host(address: int) -> None:
    """Free page-locked host memory from ``malloc_host``."""
    if address not in STATE.host:
        raise GpuError('cudaErrorInvalidValue', f'{address:#x} is not page-locked host memory')
    synchronize(0)
    del STATE.host[address]


def check_host_range(address: int, nbytes: int) -> None:
    """Raise GpuError for a device address, or a range past the end of a pinned block."""
    if is_device(address) or address == 0:
        raise GpuError('cudaErrorInvalidValue', f'{address:#x} is not a host address')
    for base, buffer in STATE.host.items():
        if base <= address < base + len(buffer) and address + nbytes > base + len(buffer):
            raise GpuError('cudaErrorInvalidValue',
                           f'{nbytes} bytes at {address:#x} run past the end of the '
                           f'{len(buffer)}-byte page-locked block at {base:#x}')


def stream_create() -> int:
    """Create a stream; return its handle."""
    handle = STATE.next_stream
    STATE.next_stream += 0x10
    STATE.streams[handle] = []
    return handle


def _check_stream(handle: int) -> None:
    if handle not in STATE.streams:
        raise GpuError('cudaErrorInvalidResourceHandle', f'stream {handle:#x} does not exist')


def _flush(handle: int) -> None:
    queue = STATE.streams[handle]
    while queue:
        queue.pop(0)()


def enqueue(handle: int, work: Callable[[], None]) -> None:
    """Queue ``work`` on a stream (stream 0 waits for the others, the others for stream 0)."""
    _check_stream(handle)
    if handle == 0:
        for other in list(STATE.streams):
            if other:
                _flush(other)
    else:
        _flush(0)
    STATE.streams[handle].append(work)


def synchronize(handle: int) -> None:
    """Run everything queued on a stream (on every stream for stream 0)."""
    _check_stream(handle)
    if handle == 0:
        for other in list(STATE.streams):
            _flush(other)
    else:
        _flush(handle)


def stream_destroy(handle: int) -> None:
    """Destroy a stream (its queued work still completes)."""
    if handle == 0:
        raise GpuError('cudaErrorInvalidResourceHandle', 'the default stream cannot be destroyed')
    _check_stream(handle)
    _flush(handle)
    del STATE.streams[handle]


def live() -> Dict[str, int]:
    """Count the device blocks, page-locked blocks and streams allocated now."""
    return {'device': len(STATE.device), 'host': len(STATE.host),
            'streams': len(STATE.streams) - 1}
