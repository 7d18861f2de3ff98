"""A local web playground that runs the library's real code in the browser's place.

``descend playground`` serves one self-contained page (no external scripts or fonts)
with two views: an optimizer race on 2-D surfaces and a small network learning a 2-D
toy set. All math runs in Python through descend's registries; the page only draws.

>>> from descend.playground import make_server
>>> srv = make_server(port=0); srv.server_close()
"""

from descend.playground.server import make_server, serve

__all__ = ["make_server", "serve"]
