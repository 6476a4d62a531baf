#!/usr/bin/env python3
"""A minimal HTTPS upstream for the TLS tests: answers any POST with a fixed chat completion.

usage: tls_upstream.py CERT KEY [extra_record] -- prints {"msg":"listening","port":N} on
stderr when ready. Each connection it accepts is logged on stderr as {"msg":"connection"}.
With `extra_record`, each answer is followed, in a TLS record of its own, by a second
answer nobody asked for.
"""
import http.server
import json
import ssl
import sys

BODY = json.dumps({
    "id": "chatcmpl-tls", "object": "chat.completion", "created": 0, "model": "tls-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "over tls"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}).encode()


EXTRA = len(sys.argv) > 3 and sys.argv[3] == "extra_record"
SMUGGLED_BODY = BODY.replace(b"over tls", b"SMUGGLED")
SMUGGLED = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
            str(len(SMUGGLED_BODY)).encode() + b"\r\n\r\n" + SMUGGLED_BODY)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        print(json.dumps({"msg": "connection"}), file=sys.stderr, flush=True)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
        if EXTRA:
            self.wfile.flush()
            self.wfile.write(SMUGGLED)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(json.dumps({"msg": "listening", "port": server.server_address[1]}, separators=(",", ":")),
      file=sys.stderr,
      flush=True)
server.serve_forever()
