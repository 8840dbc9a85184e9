#!/usr/bin/env python3
"""Hostile document servers on 127.0.0.1 for `scripts/bench documents`.

usage: hostile_server.py PORT

Under /big/, /endless/ and /links/ every path answers with an Apache FancyIndexing page:
  big      50 MB of rows, with Content-Length
  endless  rows forever, no Content-Length (stops at 1 GiB or when the client hangs up)
  links    100 000 rows (about 7 MB), with Content-Length
Anything else is a 200 with an empty body (the readiness probe).
"""
import http.server
import sys

ROW = '<a href="file-{i}.img">file-{i}.img</a>   2024-08-21 10:00  584M  \n'
HEAD, TAIL = "<html><body><pre>", "</pre></body></html>\n"
ENDLESS_CAP = 1 << 30
BLOCK = 64 << 10


def rows(count):
    """The body in blocks of about 64 KiB; endless when count is None."""
    block, sent, i = [HEAD], 0, 0
    size = len(HEAD)
    while count is None or i < count:
        row = ROW.format(i=i)
        block.append(row)
        size += len(row)
        i += 1
        if size >= BLOCK:
            data = "".join(block).encode()
            yield data
            sent += len(data)
            block, size = [], 0
            if sent >= ENDLESS_CAP:
                return
    block.append(TAIL)
    yield "".join(block).encode()


def rows_for_size(size):
    return size // len(ROW.format(i=0)) + 1


CASES = {"big": rows_for_size(50_000_000), "endless": None, "links": 100_000}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        case = self.path.strip("/").split("/")[0]
        if case not in CASES:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        count = CASES[case]
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        if count is not None:
            self.send_header("Content-Length", str(sum(len(b) for b in rows(count))))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for block in rows(count):
                self.wfile.write(block)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()
