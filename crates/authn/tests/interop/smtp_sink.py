"""A real SMTP server on loopback (aiosmtpd) that writes each received message to a file.

Usage: python3 smtp_sink.py OUT_DIR
Prints the port it listens on, then serves until stdin closes (the Rust test holds it).
"""
import os
import socket
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        path = os.path.join(self.out_dir, f"{self.n:04d}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(f"X-Envelope-To: {','.join(envelope.rcpt_tos)}\r\n".encode())
            f.write(envelope.content)
        os.rename(path + ".tmp", path)
        return "250 OK"


def main():
    out_dir = sys.argv[1]
    # aiosmtpd's Controller cannot listen on port 0, so pick a free loopback port first.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Sink(out_dir), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    # Serve until the parent closes our stdin (or 120 s pass, so a crashed test cannot leak us).
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if sys.stdin.read(1) == "":
                break
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
