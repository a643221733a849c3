"""HTTP side of the loopback W&B server: `POST /graphql`, the run file stream, and blob PUT/GET.

Unknown GraphQL root fields answer an error naming the field and are recorded in `unknown`, so a test
fixture can fail loudly when a new SDK asks for something this server does not implement.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .executor import Execution, GraphQLFailure
from .model import State
from .schema import root_fields


class LoopbackWandb:
    """A threaded W&B backend on 127.0.0.1:<free port>; `base_url` goes into WANDB_BASE_URL."""

    def __init__(self, entities: tuple[str, ...] = ("ent",)):
        self.state = State(entities)
        self.unknown: list[str] = []
        self.operations: list[str] = []  # operationName of every GraphQL request, in arrival order
        self.hold = threading.Event()  # while set, blob uploads are not answered (a stalled network)
        self.fail_graphql: set[str] = set()  # operation names answered with HTTP 403 "permission denied"
        self.blob_bytes_served = 0  # body bytes of every blob GET answered (what downloads transferred)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="loopback-wandb", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "LoopbackWandb":
        self.state.base_url = self.base_url
        self._thread.start()
        return self

    def stop(self) -> None:
        self.hold.clear()
        self._httpd.shutdown()
        self._httpd.server_close()

    def graphql(self, body: dict) -> tuple[int, dict]:
        execution = Execution(body["query"], body.get("variables"), body.get("operationName"))
        name = execution.operation.name.value if execution.operation.name else "?"
        self.operations.append(name)
        if name in self.fail_graphql:
            return 403, {"errors": [{"message": "permission denied"}]}
        with self.state.lock:
            root = root_fields(self, execution.kind)
            for field in execution.operation.selection_set.selections:
                field_name = getattr(getattr(field, "name", None), "value", None)
                if field_name and field_name not in root:
                    self.unknown.append(f"{execution.kind} {name}: {field_name}")
                    return 200, {"data": None,
                                 "errors": [{"message": f"loopback W&B server: no resolver for {field_name}"}]}
            data = execution.run(root)
        return 200, {"data": data, **({"errors": execution.errors} if execution.errors else {})}


def _handler_for(server: LoopbackWandb):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: the test log shows failures, not traffic
            pass

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else b""
            return gzip.decompress(data) if self.headers.get("Content-Encoding") == "gzip" else data

        def _send(self, code: int, payload: bytes, content_type: str = "application/json") -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on this request (its timeout): nothing to answer

        def _json(self, code: int, obj) -> None:
            self._send(code, json.dumps(obj).encode())

        def do_POST(self) -> None:
            body = self._body()
            if self.path.split("?")[0] == "/graphql":
                try:
                    code, answer = server.graphql(json.loads(body))
                except GraphQLFailure as exc:
                    code, answer = 200, {"data": None, "errors": [{"message": str(exc)}]}
                self._json(code, answer)
            elif self.path.startswith("/files/") and self.path.endswith("/file_stream"):
                self._json(200, {"exitcode": None, "limits": {}})
            else:
                self._json(404, {"error": f"no route {self.path}"})

        def do_PUT(self) -> None:
            body = self._body()
            if not self.path.startswith("/storage/"):
                return self._json(404, {"error": f"no route {self.path}"})
            while server.hold.is_set():
                time.sleep(0.05)
            with server.state.lock:
                server.state.blobs[self.path.split("?")[0][len("/storage/"):]] = body
            self._send(200, b"")

        def do_GET(self) -> None:
            key = self.path.split("?")[0][len("/storage/"):] if self.path.startswith("/storage/") else None
            with server.state.lock:
                data = server.state.blobs.get(key) if key else None
            if data is None:
                return self._json(404, {"error": f"no blob {self.path}"})
            with server.state.lock:
                server.blob_bytes_served += len(data)
            self._send(200, data, "application/octet-stream")

    return Handler
