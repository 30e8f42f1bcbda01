"""``clipvip serve INDEX``: a local web page to search an index (text-to-video and "more like this")."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a search page for an index (http://127.0.0.1:8000 by default)")
    p.add_argument("index", help="index folder built by `clipvip index`")
    p.add_argument("--model", default=None, help="model (default: the one recorded in the index)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default loopback only; the page serves your video files)"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-query-chars", type=int, default=200)
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port, bound BEFORE the slow index/model load and before "serving on" is
    printed, so a busy port is one clear error instead of a message that claims success followed by a traceback."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ValueError(f"--host {host}: cannot resolve ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a closing (TIME_WAIT) port is free
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port} ({e.strerror}); another server is using it? pick another --port"
        ) from None
    return sock


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from clipvip_apps.web import WebConfig, create_app_from_path

    if not _is_loopback(args.host):
        log.warning("binding %s: anyone who can reach this address can search and watch the indexed videos", args.host)
    sock = bind(args.host, args.port)
    try:
        app = create_app_from_path(args.index, args.model, WebConfig(max_query_chars=args.max_query_chars))
        print(f"serving {args.index} on http://{args.host}:{args.port}", flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
    return 0
