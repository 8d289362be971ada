"""Which of the SO_REUSEPORT sockets on the voice port a sealed datagram lands on.

Without help the kernel picks a socket of the group by a hash of the datagram's
addresses, so one session's datagrams reach one forwarding loop only while they come
from one address. Protocol 2's replay window must see *every* datagram of its session,
from whatever address: a captured ping replayed from another address, landing on a
loop whose window never saw its counter, would otherwise pass as fresh and move the
session's voice there. So a sealed relay with ``--udp-workers N`` attaches a classic
BPF program to the group (``SO_ATTACH_REUSEPORT_CBPF``, Linux 4.5+) that picks the
socket by the sender id in the clear header: index ``sid % N``. Every datagram of a
session then meets the one replay window that holds its history, whichever address
it comes from, exactly as with one loop.

The kernel runs the program on the UDP payload (``net/core/sock_reuseport.c``,
``run_bpf_filter``): a load beyond a short datagram ends it with 0, the relay
process's own socket; an index the group does not have (a socket not bound yet) falls
back to the hash. The group is complete before the relay serves (the workers report
bound first) and a worker that dies stops a sealed relay, since the kernel would move
another socket into its index.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from relay.protocol.sealed_datagram import SID_OFFSET

SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)  # asm-generic

# Classic BPF opcodes (linux/bpf_common.h).
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20  # A = the u32 at offset k, big-endian
BPF_ALU_MOD_K = 0x04 | 0x90 | 0x00  # A = A % k
BPF_RET_A = 0x06 | 0x10  # return A: the socket's index in the group
_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k


def program(sockets: int) -> list[tuple[int, int, int, int]]:
    """The filter, as (code, jt, jf, k) instructions: the socket index ``sid % sockets``."""
    if not 1 <= sockets <= 0xFFFF:
        raise ValueError(f"a group of {sockets} sockets")
    return [(BPF_LD_W_ABS, 0, 0, SID_OFFSET), (BPF_ALU_MOD_K, 0, 0, sockets), (BPF_RET_A, 0, 0, 0)]


def run(prog: list[tuple[int, int, int, int]], payload: bytes) -> int:
    """What the kernel computes for ``payload`` (for tests): the index, 0 when too short."""
    acc = 0
    for code, _jt, _jf, k in prog:
        if code == BPF_LD_W_ABS:
            if len(payload) < k + 4:
                return 0  # classic BPF: an out-of-bounds load ends the program with 0
            acc = int.from_bytes(payload[k : k + 4], "big")
        elif code == BPF_ALU_MOD_K:
            acc %= k
        elif code == BPF_RET_A:
            return acc
        else:
            raise ValueError(f"opcode {code:#x} is not one this module writes")
    return acc


class _Fprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))  # struct sock_fprog


def steer_by_sender(sock: socket.socket, sockets: int) -> None:
    """Attach the program to ``sock``'s reuseport group (bound with SO_REUSEPORT).

    The kernel copies the program, so the buffers may go once this returns. OSError
    if the kernel refuses (then a sealed relay cannot run more than one loop).
    """
    insns = program(sockets)
    buf = ctypes.create_string_buffer(b"".join(_INSN.pack(*i) for i in insns))
    fprog = _Fprog(len(insns), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))
