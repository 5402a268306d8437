#!/usr/bin/env python3
"""A fixed-delay wire between two TUN devices, for added round-trip time without sch_netem.

Every IP packet read from one device is written to the other DELAY ms later, in order.
The fleet harness opens both devices here (in the root namespace), then moves one of them
into the fleet's namespace; the open descriptors stay valid across the move. The process
stops by itself after --ttl-s seconds, on SIGTERM, or when a device goes away.
"""
import argparse
import collections
import fcntl
import os
import selectors
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MTU_READ = 65536


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="first TUN device name")
    ap.add_argument("--b", required=True, help="second TUN device name")
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    ap.add_argument("--ttl-s", type=float, default=7200)
    ap.add_argument("--ready", required=True, help="file to write our PID into once open")
    args = ap.parse_args()

    fds = {"a": open_tun(args.a), "b": open_tun(args.b)}
    other = {"a": "b", "b": "a"}
    # queue[x]: packets waiting to be written to device x, as (due, bytes), due ascending
    queue = {"a": collections.deque(), "b": collections.deque()}
    delay = args.delay_ms / 1000.0
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    sel = selectors.DefaultSelector()
    for side, fd in fds.items():
        sel.register(fd, selectors.EVENT_READ, side)
    with open(args.ready + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(args.ready + ".tmp", args.ready)

    end = time.monotonic() + args.ttl_s
    packets = dropped = 0
    while not stop[0]:
        now = time.monotonic()
        if now >= end:
            break
        for side, q in queue.items():
            while q and q[0][0] <= now:
                _, pkt = q.popleft()
                try:
                    os.write(fds[side], pkt)
                    packets += 1
                except BlockingIOError:
                    dropped += 1
        heads = [q[0][0] for q in queue.values() if q]
        timeout = max(0.0, min(heads) - now) if heads else min(1.0, end - now)
        try:
            events = sel.select(timeout)
        except InterruptedError:
            continue
        for key, _ in events:
            side = key.data
            due = time.monotonic() + delay
            for _ in range(256):  # drain a burst, bounded
                try:
                    pkt = os.read(fds[side], MTU_READ)
                except BlockingIOError:
                    break
                except OSError:
                    stop[0] = True
                    break
                queue[other[side]].append((due, pkt))
    print(f"delayline: {packets} packets delivered, {dropped} dropped", file=sys.stderr)


if __name__ == "__main__":
    main()
