#!/usr/bin/env python3
"""Abusive TCP peers against a running SIP edge, to see its TCP limits hold (docs/architecture.md, "TCP and TLS limits").

    bench/tcp-abuse.py HOST:PORT [--sources 4] [--slow-per-source 80] [--deaf 4] [--seconds 30]

- Slow senders: from each of --sources loopback addresses (127.0.0.10, .11, ...), --slow-per-source connections that
  each trickle one OPTIONS one byte every 100 ms (it would take about 40 s to complete). Reported: how many the edge
  closed at once (a connection cap), how many it closed later (the message timeout) and after how long, and how many
  were still open at the end.
- Deaf peers: --deaf connections (from 127.0.0.9, a 4 KiB receive buffer) that send OPTIONS with Max-Forwards: 0 (the
  edge answers each itself with a 200 that copies the request's 4 KiB Via) as fast as the edge reads them, and never
  read an answer. Reported: requests each sent before the edge closed the connection, and after how long.
Everything stops after --seconds; the edge's own counters say why it closed what it closed.
"""
import argparse
import asyncio
import socket
import time

PACE = 0.1


def options(i, via_padding=0, extra=""):
    branch = "z9hG4bK" + "b" * via_padding + str(i)
    return (f"OPTIONS sip:edge@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch={branch}\r\n"
            f"Max-Forwards: 0\r\nFrom: <sip:abuse@127.0.0.1>;tag={i}\r\nTo: <sip:edge@127.0.0.1>\r\n"
            f"Call-ID: abuse-{i}-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def connect(edge, source, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((source, 0))
    s.setblocking(False)
    return s


async def slow(edge, source, i, deadline, out):
    loop = asyncio.get_running_loop()
    s = connect(edge, source)
    start = time.monotonic()
    try:
        await loop.sock_connect(s, edge)
        message = options(i, extra="X-Pad: " + "p" * 80 + "\r\n")
        for b in message:
            if time.monotonic() > deadline:
                out.append(("open", time.monotonic() - start))
                return
            await loop.sock_sendall(s, bytes([b]))
            await asyncio.sleep(PACE)
        out.append(("completed", time.monotonic() - start))
    except OSError:
        out.append(("closed", time.monotonic() - start))
    finally:
        s.close()


async def deaf(edge, i, deadline, out):
    loop = asyncio.get_running_loop()
    s = connect(edge, "127.0.0.9", rcvbuf=4096)
    start = time.monotonic()
    sent = 0
    try:
        await loop.sock_connect(s, edge)
        while time.monotonic() < deadline:
            await asyncio.wait_for(loop.sock_sendall(s, options(i * 1_000_000 + sent, via_padding=4096)), max(0.1, deadline - time.monotonic()))
            sent += 1
        out.append(("open", sent, time.monotonic() - start))
    except (OSError, asyncio.TimeoutError) as e:
        out.append(("closed" if isinstance(e, OSError) else "open", sent, time.monotonic() - start))
    finally:
        s.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("edge")
    p.add_argument("--sources", type=int, default=4)
    p.add_argument("--slow-per-source", type=int, default=80)
    p.add_argument("--deaf", type=int, default=4)
    p.add_argument("--seconds", type=float, default=30)
    a = p.parse_args()
    host, port = a.edge.rsplit(":", 1)
    edge = (host, int(port))
    deadline = time.monotonic() + a.seconds
    slow_out, deaf_out = [], []
    tasks = [slow(edge, f"127.0.0.{10 + k}", k * 1000 + j, deadline, slow_out) for k in range(a.sources) for j in range(a.slow_per_source)]
    tasks += [deaf(edge, i, deadline, deaf_out) for i in range(a.deaf)]
    await asyncio.gather(*tasks)
    at_once = [t for r, t in slow_out if r == "closed" and t < 1]
    later = sorted(t for r, t in slow_out if r == "closed" and t >= 1)
    print(f"slow senders: {len(slow_out)}; closed at once {len(at_once)}; closed later {len(later)}"
          + (f" (after {later[0]:.1f}-{later[-1]:.1f} s)" if later else "")
          + f"; completed {sum(1 for r, _ in slow_out if r == 'completed')}; still open {sum(1 for r, _ in slow_out if r == 'open')}")
    for r, sent, t in deaf_out:
        print(f"deaf peer: {r} after {t:.1f} s, {sent} requests sent")


asyncio.run(main())
