"""A sniffer on a lab VM's NIC: which frames carrying a marker reached it.

Tests that something was refused must show that the destination (and every bystander)
saw nothing, not only that the sender failed. `Sniffer` runs this file inside a VM's
namespace (`python sniff.py eth0 SECONDS MARKER_HEX`); it captures every frame the NIC
receives (AF_PACKET, incoming only) and prints one line per frame whose bytes contain the
marker: its hex. Frames without the marker (the VM's own ARP, IPv6 chatter) are ignored.
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ryu_ctfw import lab

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class Sniffer:
    """Started before the traffic, read after it: `frames()` are the marked frames seen
    until then (and for a short settle time after, for frames still on their way)."""

    def __init__(self, vm: lab.Vm, marker: bytes, seconds: float = 60.0) -> None:
        self.marker = marker
        self.proc = subprocess.Popen(
            vm.argv([sys.executable, str(Path(__file__)), "eth0", str(seconds), marker.hex()]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = self.proc.stdout.readline() if self.proc.stdout else ""
        if ready.strip() != "ready":
            raise lab.LabError(f"sniffer in {vm.ns} did not start: {self.proc.stderr.read()}")

    def frames(self, settle: float = 0.5) -> list[bytes]:
        time.sleep(settle)
        if self.proc.poll() is None:
            self.proc.terminate()
        out, err = self.proc.communicate(timeout=30)
        # 0: it ran out of time or took the SIGTERM; -SIGTERM: it was still starting its
        # handler or already on its way out. Anything else is a failure worth seeing.
        if self.proc.returncode not in (0, -signal.SIGTERM):
            raise lab.LabError(f"sniffer failed ({self.proc.returncode}): {err}")
        return [bytes.fromhex(line) for line in out.split()]


def watch(mark: bytes, *vms: lab.Vm) -> list[Sniffer]:
    """A sniffer on each VM, for frames carrying `mark`."""
    return [Sniffer(vm, mark) for vm in vms]


def seen(sniffers: list[Sniffer]) -> list[int]:
    """Marked frames each sniffer saw (one settle time for all of them)."""
    return [len(s.frames(settle=0.5 if i == 0 else 0)) for i, s in enumerate(sniffers)]


def main(iface: str, seconds: float, marker: bytes) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            continue
        data, addr = sock.recvfrom(65535)
        if addr[2] != PACKET_OUTGOING and marker in data:
            print(data.hex(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]), bytes.fromhex(sys.argv[3])))
