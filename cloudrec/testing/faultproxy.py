"""A fault-injecting reverse proxy for an S3 server on loopback (aiohttp).

Run ``python -m cloudrec.testing.faultproxy --listen PORT --upstream URL``.
Each request, with the configured probabilities (drawn from one seeded RNG,
checked in this order), gets:

* ``p503``   503 ``<Code>SlowDown</Code>`` (S3 XML body), upstream untouched;
* ``p500``   500 ``<Code>InternalError</Code>``;
* ``p403``   403 ``<Code>AccessDenied</Code>`` (checked last: what a bucket policy
  refusing one kind of request answers);
* ``pdrop``  the connection closed without any response;
* ``ptrunc`` the upstream answer with its real Content-Length but only half
  the body, then the connection closed (needs a body of >= 2 bytes);
* ``pstall`` nothing for ``stall_s`` seconds (past any sane client timeout),
  then the connection closed; ``stall_at="body"`` sends headers and half the
  body first;
* ``pflip``  the upstream answer whole, with the body's middle byte inverted
  (a corruption no length check sees: only a checksum of the bytes can);

otherwise the request is streamed through unchanged (Host kept so SigV4
still matches).  ``latency_ms`` delays every proxied request; ``mb_per_s``
(> 0) paces each answer's body to that many MB per second (a slow link, so a
test can see bytes arrive over time).  ``methods``
limits faults to some HTTP methods (e.g. ``"GET"`` so uploads stay clean),
``targets`` to some kinds of request named as the traffic counts name them
(``"GET"``: a request on no object suffix, such as a listing; ``"GET .rec"``),
and ``max_faults`` caps the number injected.

Control at run time: ``GET /__faults?p503=0.2&seed=3`` sets the given keys
(``reset=1`` first puts every setting back to its default, ``clear=1`` zeroes
the counts) and answers ``{"config": ..., "counts": ...}`` as JSON.  Only
binds to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from typing import Any, Dict

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from yarl import URL

CONTROL_PATH = "/__faults"
RATE_KEYS = ("p503", "p500", "pdrop", "ptrunc", "pstall", "pflip", "p403")
COUNT_KEYS = ("requests", "503", "500", "drop", "trunc", "stall", "flip", "403", "ok", "faults")
DEFAULTS: Dict[str, Any] = {**{k: 0.0 for k in RATE_KEYS}, "latency_ms": 0.0, "mb_per_s": 0.0, "stall_s": 30.0,
                            "stall_at": "head", "methods": "", "targets": "", "max_faults": -1, "seed": 0}
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-connection", "content-length"}


class _State:
    """Settings, counters and the seeded RNG shared by all requests."""

    def __init__(self, **config: Any) -> None:
        self.config: Dict[str, Any] = dict(DEFAULTS)
        self.counts: Dict[str, int] = {k: 0 for k in COUNT_KEYS}
        self.traffic: Dict[str, Dict[str, int]] = {}  # "GET .rec" -> requests, body bytes
        self.rng = random.Random(0)
        self.update(config)

    @staticmethod
    def kind_of(req: web.Request) -> str:
        """A request's method and object suffix (``GET .rec``; a listing is ``GET``)."""
        name = req.path.rsplit("/", 1)[-1]
        ext = name[name.rfind("."):] if "." in name else ""
        return f"{req.method} {ext}".rstrip()

    def tally(self, req: web.Request, nbytes: int = 0, request: bool = False) -> None:
        """Traffic by method and object suffix (``GET .rec``): requests and body bytes sent."""
        t = self.traffic.setdefault(self.kind_of(req), {"requests": 0, "bytes": 0})
        t["requests"] += int(request)
        t["bytes"] += nbytes

    def update(self, values: Dict[str, Any]) -> None:
        for key, raw in values.items():
            if key not in DEFAULTS:
                raise ValueError(f"unknown fault setting {key!r}")
            default = DEFAULTS[key]
            val = type(default)(raw) if not isinstance(default, str) else str(raw)
            if key in RATE_KEYS and not 0.0 <= val <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {val}")
            if key == "stall_at" and val not in ("head", "body"):
                raise ValueError("stall_at must be 'head' or 'body'")
            self.config[key] = val
            if key == "seed":
                self.rng = random.Random(val)
        if sum(self.config[k] for k in RATE_KEYS) > 1.0 + 1e-9:
            raise ValueError("fault probabilities add up to more than 1")

    def pick(self, method: str, target: str = "") -> str:
        """Draw the fate of one request (``target``: its :meth:`kind_of`): a fault kind
        (counted at once, so ``max_faults`` holds under concurrency) or 'ok' (counted
        when done)."""
        kind = self._draw(method, target)
        if kind != "ok":
            self.count(kind)
        return kind

    def uncount(self, kind: str) -> None:
        """A drawn fault that could not be applied (nothing to cut)."""
        self.counts[kind] -= 1
        self.counts["faults"] -= 1

    def _draw(self, method: str, target: str = "") -> str:
        self.counts["requests"] += 1
        r = self.rng.random()  # always drawn, so a seed fixes the sequence
        cfg = self.config
        if cfg["methods"] and method.upper() not in cfg["methods"].upper().split(","):
            return "ok"
        if cfg["targets"] and target not in [t.strip() for t in cfg["targets"].split(",")]:
            return "ok"
        if 0 <= cfg["max_faults"] <= self.counts["faults"]:
            return "ok"
        for key in RATE_KEYS:
            if r < cfg[key]:
                return key[1:]
            r -= cfg[key]
        return "ok"

    def count(self, kind: str) -> None:
        self.counts[kind] += 1
        if kind != "ok":
            self.counts["faults"] += 1

    def snapshot(self) -> Dict[str, Any]:
        return {"config": dict(self.config), "counts": dict(self.counts),
                "traffic": {k: dict(v) for k, v in self.traffic.items()}}


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>cloudrec-faultproxy</RequestId></Error>")
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def _abort(req: web.Request) -> web.StreamResponse:
    """Close the client's connection at once, no (further) bytes sent."""
    if req.transport is not None:
        req.transport.abort()
    raise asyncio.CancelledError()


async def _control(req: web.Request, state: _State) -> web.Response:
    query = dict(req.query)
    try:
        if query.pop("reset", None):
            state.config = dict(DEFAULTS)
            state.rng = random.Random(0)
        if query.pop("clear", None):
            state.counts = {k: 0 for k in COUNT_KEYS}
            state.traffic = {}
        state.update(query)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(state.snapshot())


async def _forward(req: web.Request, state: _State, kind: str) -> web.StreamResponse:
    """Send the request upstream and stream the answer back, cutting it if asked."""
    body = await req.read()
    headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP}
    session: ClientSession = req.app["session"]
    url = URL(req.app["upstream"] + req.raw_path, encoded=True)
    async with session.request(req.method, url, headers=headers, data=body, allow_redirects=False,
                               skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding")
                               ) as up:
        out = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
        resp = web.StreamResponse(status=up.status, headers=out)
        clen = up.headers.get("Content-Length")
        if clen is not None:
            resp.content_length = int(clen)
        cut = kind in ("trunc", "stall") and req.method != "HEAD" and clen is not None and int(clen) > 1
        flip = -1   # the body offset whose byte is inverted
        if kind == "flip":
            if req.method != "HEAD" and clen is not None and int(clen) > 0:
                flip = int(clen) // 2
            else:
                state.uncount(kind)
                kind = "ok"
        if kind in ("trunc", "stall") and not cut:
            state.uncount(kind)  # nothing to cut: passes through clean
            kind = "ok"
        await resp.prepare(req)
        if cut:
            half, sent = int(clen) // 2, 0
            async for chunk in up.content.iter_chunked(65536):
                chunk = chunk[: half - sent]
                await resp.write(chunk)
                sent += len(chunk)
                if sent >= half:
                    break
            if kind == "stall":
                await asyncio.sleep(state.config["stall_s"])
            return _abort(req)
        rate = float(state.config.get("mb_per_s") or 0.0) * 1e6
        at = 0
        async for chunk in up.content.iter_chunked(64 << 10 if rate > 0 else 1 << 20):
            if at <= flip < at + len(chunk):
                i = flip - at
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
            at += len(chunk)
            await resp.write(chunk)
            state.tally(req, len(chunk))
            if rate > 0:
                await asyncio.sleep(len(chunk) / rate)
        await resp.write_eof()
        if kind == "ok":
            state.count("ok")
        return resp


def build_app(upstream: str, **config: Any) -> web.Application:
    """The proxy as an aiohttp application forwarding to ``upstream`` (a URL)."""
    state = _State(**config)
    app = web.Application(client_max_size=1 << 31)
    app["upstream"] = upstream.rstrip("/")
    app["state"] = state

    async def handler(req: web.Request) -> web.StreamResponse:
        if req.path == CONTROL_PATH:
            return await _control(req, state)
        kind = state.pick(req.method, state.kind_of(req))
        state.tally(req, request=True)
        if state.config["latency_ms"] > 0:
            await asyncio.sleep(state.config["latency_ms"] / 1000.0)
        if kind == "503":
            return _s3_error(503, "SlowDown", "Please reduce your request rate.")
        if kind == "500":
            return _s3_error(500, "InternalError", "We encountered an internal error. Please try again.")
        if kind == "403":
            return _s3_error(403, "AccessDenied", "Access Denied")
        if kind == "drop":
            await req.read()
            return _abort(req)
        if kind == "stall" and state.config["stall_at"] == "head":
            await req.read()
            await asyncio.sleep(state.config["stall_s"])
            return _abort(req)
        return await _forward(req, state, kind)

    async def on_startup(app: web.Application) -> None:
        app["session"] = ClientSession(connector=TCPConnector(limit=256),
                                       timeout=ClientTimeout(total=None), auto_decompress=False)

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    app.router.add_route("*", "/{tail:.*}", handler)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1")
    ap.add_argument("--upstream", required=True, help="upstream URL, e.g. http://127.0.0.1:5555")
    for key, default in DEFAULTS.items():
        ap.add_argument("--" + key.replace("_", "-"), dest=key, type=type(default), default=default)
    ns = ap.parse_args(argv)
    if not ns.upstream.startswith(("http://127.", "http://localhost")):
        ap.error("upstream must be on loopback")
    config = {k: getattr(ns, k) for k in DEFAULTS}
    app = build_app(ns.upstream, **config)

    async def report(app: web.Application) -> None:
        print("faultproxy counts:", json.dumps(app["state"].counts), flush=True)

    app.on_shutdown.append(report)
    web.run_app(app, host="127.0.0.1", port=ns.listen, shutdown_timeout=1.0,
                print=lambda *x: print(*x, flush=True), handle_signals=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
