"""Only this viewer's own page may drive it: a check of each request's ``Host`` and ``Origin`` headers.

Binding to 127.0.0.1 keeps other machines out, not other web sites: any page open in the user's browser may open a
websocket to ``ws://127.0.0.1:8080``, and viser checks neither header, so a page anywhere could read the run's
images and metrics, pause a live fit or save a camera path (a bug hunt did all three). The rule, for every request
(the page's files and the websocket):

- ``Origin``, when the request has one (a browser always sends it on a websocket; a script need not), must be the
  address the request was sent to, ``Host``: the viewer's own page, whatever name or forwarded port reached it
  (``ssh -L 9000:localhost:8080`` gives Host and Origin ``localhost:9000``). ``null`` (a sandboxed frame, a local
  file) is refused.
- on a loopback address (the default), ``Host`` must name this machine (``localhost``, ``127.x.x.x``, ``::1``): a
  page whose own name was re-pointed at 127.0.0.1 (DNS rebinding) has its own name there, and is refused.

``RWF_VIEWER_ORIGINS``: more origins to accept, comma-separated (``https://hub.example.org``), for a viewer reached
through a proxy that rewrites the address. A refused request gets 403 and one line in the terminal per origin.

viser (1.1) takes no such check, so :func:`guard` wraps the ``serve`` call of its websocket module, and of no other.
"""

from __future__ import annotations

import http
import os
import sys
import types
from urllib.parse import urlsplit

ENV = "RWF_VIEWER_ORIGINS"
_said: set[str] = set()


def extra_origins() -> set[str]:
    """The origins ``RWF_VIEWER_ORIGINS`` adds, as ``scheme://host[:port]`` in lower case."""
    return {o.strip().rstrip("/").lower() for o in os.environ.get(ENV, "").split(",") if o.strip()}


def refusal(bound_host: str, headers) -> str | None:
    """Why a request with ``headers`` may not reach a viewer bound to ``bound_host`` (None: it may)."""
    try:
        host = (headers.get("Host") or "").strip().lower()
        origin = headers.get("Origin")
    except LookupError:  # websockets' MultipleValuesError: two Host or Origin headers
        return "a request with several Host or Origin headers"
    if origin is not None:
        origin = origin.strip().rstrip("/").lower()
        if origin in extra_origins():
            return None
        parts = urlsplit(origin)
        if origin == "null" or parts.scheme not in ("http", "https") or parts.netloc != host:
            return f"a page at {origin} (not this viewer's own page)"
    from .app import is_loopback  # noqa: PLC0415  (app imports this module)

    if is_loopback(bound_host):
        try:
            name = urlsplit("//" + host).hostname
        except ValueError:
            name = None
        if not is_loopback(name):
            return f"a request for host {host or '(none)'} (this viewer answers to localhost only)"
    return None


def _guarded_serve(serve):
    def serve_checked(handler, host, *args, process_request=None, **kwargs):
        def check(connection, request):
            why = refusal(str(host), request.headers)
            if why is not None:
                if why not in _said:
                    _said.add(why)
                    print(f"viewer: refused {why}; set {ENV} to allow another origin", file=sys.stderr, flush=True)
                return connection.respond(http.HTTPStatus.FORBIDDEN, "forbidden: not this viewer's page\n")
            return process_request(connection, request) if process_request is not None else None

        return serve(handler, host, *args, process_request=check, **kwargs)

    return serve_checked


class _Overlay(types.ModuleType):
    """A module that is ``real`` but for the names in ``overrides``."""

    def __init__(self, real, **overrides):
        super().__init__(real.__name__)
        self._real, self._overrides = real, overrides

    def __getattr__(self, name):
        overrides = self.__dict__.get("_overrides", {})
        return overrides[name] if name in overrides else getattr(self.__dict__["_real"], name)


def guard() -> None:
    """Make viser's websocket server check each request (:func:`refusal`); once per process, before a server
    starts. viser's module sees a ``websockets`` whose ``asyncio.server.serve`` checks; the library itself and its
    other users are untouched."""
    import viser.infra._infra as infra  # noqa: PLC0415
    import websockets.asyncio.server  # noqa: PLC0415

    if isinstance(infra.websockets, _Overlay):
        return
    real = infra.websockets
    server = _Overlay(real.asyncio.server, serve=_guarded_serve(real.asyncio.server.serve))
    infra.websockets = _Overlay(real, asyncio=_Overlay(real.asyncio, server=server))
