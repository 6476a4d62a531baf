#!/usr/bin/env python3
"""An upstream whose streams end by closing the connection, without `data: [DONE]`.

usage: sse_upstream.py MODE -- `cut` sends two content chunks and closes; `usage` also
sends the final usage chunk first, `finish` a chunk with finish_reason "stop". For two
choices (n = 2): `one_of_two` finishes choice 0 only, `two_of_two` both. `error` sends a
vLLM-style error chunk, then `data: [DONE]`; `error_then_close` the error chunk, then closes. `mixed_case` answers with Content-Type
`Text/Event-Stream` and the usage chunk; `split_usage` sends the usage chunk as two
`data:` lines (one JSON text once joined). `early_usage` sends a usage chunk (1 output
token) after the two words, then 20 more content chunks and a finish_reason;
`finish_then_hang` sends the finish_reason and the usage, then neither `data: [DONE]` nor
the end of the body for a minute; `error_first_split` sends an error chunk as its first
event in two pieces 50 ms apart, and closes; `ping_then_slow` sends a keep-alive comment,
then its answer 1.5 s later; `long` sends 300 content chunks whatever max_tokens says, then
a finish_reason, its usage and `data: [DONE]`; `overreport` sends two content chunks,
a finish_reason, a usage of 1,000,000 output tokens and `data: [DONE]`. Prints {"msg":"listening","port":N} on stderr when ready.
"""
import http.server
import json
import sys
import time

MODE = sys.argv[1]


def chunk(payload):
    return ("data: " + json.dumps(payload, separators=(",", ":")) + "\n\n").encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type",
                         "Text/Event-Stream" if MODE == "mixed_case" else "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        if MODE == "ping_then_slow":
            self.wfile.write(b": keep-alive\n\n")
            self.wfile.flush()
            time.sleep(1.5)
        if MODE == "error_first_split":
            for piece in (b'data: {"err',
                          b'or":{"message":"overloaded","type":"server_error"}}\n\n'):
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(0.05)
            self.close_connection = True
            return
        for word in ("Hello", " there"):
            self.wfile.write(chunk({"choices": [{"index": 0, "delta": {"content": word}}]}))
        if MODE == "finish":
            self.wfile.write(chunk({"choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "stop"}]}))
        if MODE in ("one_of_two", "two_of_two"):
            self.wfile.write(chunk({"choices": [{"index": 1, "delta": {"content": "Hi"}}]}))
            self.wfile.write(chunk({"choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "stop"}]}))
            self.wfile.write(chunk({"choices": [{"index": 1, "delta": {"content": " you"}}]}))
        if MODE == "two_of_two":
            self.wfile.write(chunk({"choices": [{"index": 1, "delta": {},
                                                 "finish_reason": "length"}]}))
        if MODE in ("error", "error_then_close"):
            self.wfile.write(chunk({"error": {"object": "error", "message": "generation failed",
                                              "type": "InternalServerError", "code": 500}}))
        if MODE == "error":
            self.wfile.write(b"data: [DONE]\n\n")
        if MODE in ("usage", "mixed_case"):
            self.wfile.write(chunk({"choices": [], "usage": {"prompt_tokens": 4,
                                                             "completion_tokens": 2}}))
        if MODE == "early_usage":
            self.wfile.write(chunk({"choices": [], "usage": {"prompt_tokens": 4,
                                                             "completion_tokens": 1}}))
            for _ in range(20):
                self.wfile.write(chunk({"choices": [{"index": 0, "delta": {"content": " x"}}]}))
            self.wfile.write(chunk({"choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "stop"}]}))
        if MODE == "finish_then_hang":
            self.wfile.write(chunk({"choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "stop"}]}))
            self.wfile.write(chunk({"choices": [], "usage": {"prompt_tokens": 4,
                                                             "completion_tokens": 2}}))
            self.wfile.flush()
            time.sleep(60)
        if MODE == "long":
            for _ in range(300):
                self.wfile.write(chunk({"choices": [{"index": 0, "delta": {"content": " x"}}]}))
            self.wfile.write(chunk({"choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "length"}]}))
            self.wfile.write(chunk({"choices": [], "usage": {"prompt_tokens": 4,
                                                             "completion_tokens": 302}}))
            self.wfile.write(b"data: [DONE]\n\n")
        if MODE == "overreport":
            for word in ("Hi", " there"):
                self.wfile.write(chunk({"choices": [{"index": 0, "delta": {"content": word}}]}))
            self.wfile.write(chunk({"choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "stop"}]}))
            self.wfile.write(chunk({"choices": [], "usage": {"prompt_tokens": 4,
                                                             "completion_tokens": 1000000}}))
            self.wfile.write(b"data: [DONE]\n\n")
        if MODE == "split_usage":
            self.wfile.write(b'data: {"choices":[],\ndata: "usage":{"prompt_tokens":4,'
                             b'"completion_tokens":2}}\n\n')
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"msg": "listening", "port": server.server_address[1]}, separators=(",", ":")),
      file=sys.stderr, flush=True)
server.serve_forever()
