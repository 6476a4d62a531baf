#!/usr/bin/env python3
"""An upstream that answers every POST with one fault, for the gateway's error handling.

usage: fault_upstream.py MODE -- `status:N` answers HTTP N with a provider-style JSON error
that quotes a masked provider key (as OpenAI's 401 does), plus `retry-after: 7`;
`noretry` answers 429 with `x-should-retry: false`; `html200` answers 200 with an HTML
page; `error200` answers 200 with an error object; `gzip` answers a whole chat completion
gzip-compressed (Content-Encoding: gzip), `gzip_stream` an event stream so; `html:N`
answers HTTP N with an HTML page;
`sse_error_first` answers a 200 event stream whose first event is an error chunk;
`sse_close_first` a 200 event stream that closes before its first event; `drip` a whole
chat completion whose body comes a byte every 50 ms; `late_end` a chunked event stream on a
kept-alive connection whose last chunk comes 5 ms after `data: [DONE]`.
`bignum` answers a whole chat completion with members holding numbers past 64 bits and past
a double's range (valid JSON), usage 5 in and 7 out, and both an `x-request-id` and a
`request-id` header.
`overreport` answers a whole chat completion whose usage says 1,000,000 output tokens,
`overreport_input` one whose usage says 1,000,000,000 input tokens.
`body_cut` answers 200 with a Content-Length of 500 and closes after 40 bytes;
`stream_head_hang` answers a 200 event-stream head, then nothing for 3 s; `head_hang` answers
a whole chat completion after 3 s; `late_status:N` answers as `status:N` does, after 0.5 s.
`sse_bom` answers an Anthropic event stream (input 7 tokens, output 3) that starts with a
byte order mark; `sse_after_done` a chat stream with content after its `data: [DONE]`, in
the same write; `sse_cr_stall` a chat stream whose first event ends in bare CRs, then
nothing for 3 s; `sse_big_event` a chat stream whose first event is 4 MiB and one byte
long, then `[DONE]`.
`sse_large:N` a chat stream of N content chunks of 10,000 characters each, its usage
(5 in, N out) and `[DONE]`, in one write.
`sse_long_no_usage[:N]` a chat stream of N (default 5000) content chunks, then its finish and
`[DONE]`, with no usage.
`early413` answers 413 before reading the body and closes (a large body's write then
fails). Each connection is logged on stderr as {"msg":"connection"}.
Each request is logged on stderr as {"msg":"request","accept_encoding":...}. Prints
{"msg":"listening","port":N} on stderr when ready.
"""
import gzip
import http.server
import json
import sys
import time

MODE = sys.argv[1]
ANSWER = {"id": "c1", "object": "chat.completion", "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        sys.stderr.write(json.dumps({"msg": "connection"}) + "\n")
        sys.stderr.flush()

    def answer(self, status, content_type, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if MODE == "early413":
            sys.stderr.write(json.dumps({"msg": "request"}) + "\n")
            sys.stderr.flush()
            error = {"error": {"message": "request too large", "type": "invalid_request_error"}}
            self.answer(413, "application/json", json.dumps(error).encode(),
                        [("Connection", "close")])
            self.wfile.flush()
            time.sleep(0.2)  # the answer arrives before the close resets the connection
            self.close_connection = True
            return
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        sys.stderr.write(json.dumps({"msg": "request",
                                     "accept_encoding": self.headers.get("Accept-Encoding")}) + "\n")
        sys.stderr.flush()
        html = b"<html><body><h1>Bad Gateway</h1></body></html>"
        if MODE.startswith("status:") or MODE.startswith("late_status:"):
            if MODE.startswith("late_"):
                time.sleep(0.5)
            error = {"error": {"message": "Incorrect API key provided: sk-prov****1234",
                               "type": "invalid_request_error", "code": "invalid_api_key"}}
            self.answer(int(MODE.split(":")[1]), "application/json", json.dumps(error).encode(),
                        [("retry-after", "7")])
        elif MODE == "head_hang":
            time.sleep(3)
            self.answer(200, "application/json", json.dumps(ANSWER).encode())
        elif MODE == "noretry":
            error = {"error": {"message": "quota", "type": "insufficient_quota"}}
            self.answer(429, "application/json", json.dumps(error).encode(),
                        [("x-should-retry", "false")])
        elif MODE == "html200":
            self.answer(200, "text/html", html)
        elif MODE == "error200":
            self.answer(200, "application/json", b'{"error":{"message":"overloaded"}}')
        elif MODE == "gzip":
            self.answer(200, "application/json", gzip.compress(json.dumps(ANSWER).encode()),
                        [("Content-Encoding", "gzip")])
        elif MODE == "bignum":
            answer = dict(ANSWER, usage={"prompt_tokens": 5, "completion_tokens": 7,
                                         "total_tokens": 12}, x_id=10**30)
            body = json.dumps(answer).replace('"x_id"', '"x_far": -1e400, "x_id"')
            self.answer(200, "application/json", body.encode(),
                        [("x-request-id", "req_up_1"), ("request-id", "req_up_2")])
        elif MODE == "overreport":
            answer = dict(ANSWER, usage={"prompt_tokens": 5, "completion_tokens": 1000000,
                                         "total_tokens": 1000005})
            self.answer(200, "application/json", json.dumps(answer).encode())
        elif MODE == "overreport_input":
            answer = dict(ANSWER, usage={"prompt_tokens": 1000000000, "completion_tokens": 1,
                                         "total_tokens": 1000000001})
            self.answer(200, "application/json", json.dumps(answer).encode())
        elif MODE == "gzip_stream":
            body = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
            self.answer(200, "text/event-stream", gzip.compress(body),
                        [("Content-Encoding", "gzip")])
        elif MODE.startswith("html:"):
            self.answer(int(MODE[5:]), "text/html", html)
        elif MODE == "sse_error_first":
            self.answer(200, "text/event-stream",
                        b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n')
        elif MODE == "drip":
            body = json.dumps(ANSWER).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(0.05)
        elif MODE == "stream_head_hang":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
            time.sleep(3)
            self.close_connection = True
        elif MODE == "body_cut":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "500")
            self.end_headers()
            self.wfile.write(json.dumps(ANSWER).encode()[:40])
            self.wfile.flush()
            self.close_connection = True
        elif MODE == "sse_bom":
            events = [("message_start", {"type": "message_start", "message": {
                          "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                          "content": [], "stop_reason": None,
                          "usage": {"input_tokens": 7, "output_tokens": 1}}}),
                      ("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}),
                      ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": "Hi"}}),
                      ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                      ("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": "end_turn"},
                                         "usage": {"output_tokens": 3}}),
                      ("message_stop", {"type": "message_stop"})]
            body = "".join("event: %s\ndata: %s\n\n" % (name, json.dumps(data))
                           for name, data in events)
            self.answer(200, "text/event-stream", b"\xef\xbb\xbf" + body.encode())
        elif MODE.startswith("sse_large:"):
            chunks = int(MODE.split(":")[1])
            piece = ("data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk",
                                            "choices": [{"index": 0,
                                                         "delta": {"content": "x" * 10000},
                                                         "finish_reason": None}]})
                     + "\n\n").encode()
            usage = json.dumps({"id": "c1", "choices": [],
                                "usage": {"prompt_tokens": 5, "completion_tokens": chunks,
                                          "total_tokens": 5 + chunks}})
            self.answer(200, "text/event-stream",
                        piece * chunks + ("data: %s\n\ndata: [DONE]\n\n" % usage).encode())
        elif MODE.startswith("sse_long_no_usage"):
            def event(delta, finish):
                return ("data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk",
                                               "choices": [{"index": 0, "delta": delta,
                                                            "finish_reason": finish}]})
                        + "\n\n").encode()
            chunks = int(MODE.split(":")[1]) if ":" in MODE else 5000
            body = b"".join(event({"content": "x"}, None) for _ in range(chunks))
            body += event({}, "stop") + b"data: [DONE]\n\n"
            self.answer(200, "text/event-stream", body)
        elif MODE in ("sse_after_done", "sse_cr_stall", "sse_big_event"):
            def chunk(content):
                return json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                                   "choices": [{"index": 0, "delta": {"content": content},
                                                "finish_reason": None}]})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            if MODE == "sse_cr_stall":
                self.wfile.write(("data: " + chunk("Hi") + "\r\r").encode())
                self.wfile.flush()
                time.sleep(3)
            elif MODE == "sse_big_event":
                event = "data: " + chunk("") + "\n\n"
                padding = 4 * 1024 * 1024 + 1 - len(event)
                self.wfile.write(("data: " + chunk("x" * padding) + "\n\ndata: [DONE]\n\n").encode())
            else:
                usage = json.dumps({"id": "c1", "choices": [],
                                    "usage": {"prompt_tokens": 5, "completion_tokens": 1,
                                              "total_tokens": 6}})
                self.wfile.write(("data: %s\n\ndata: %s\n\ndata: [DONE]\n\ndata: %s\n\n"
                                  "data: [DONE]\n\n" % (chunk("Hi"), usage, chunk("LEAK"))).encode())
            self.close_connection = True
        elif MODE == "late_end":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for data in ('{"choices":[{"index":0,"delta":{"content":"Hi"}}]}',
                         '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
                         '{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}',
                         "[DONE]"):
                event = ("data: " + data + "\n\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            time.sleep(0.005)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        elif MODE == "sse_close_first":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
sys.stderr.write(json.dumps({"msg": "listening", "port": server.server_address[1]},
                            separators=(",", ":")) + "\n")
sys.stderr.flush()
server.serve_forever()
