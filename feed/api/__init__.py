"""The read API: an ASGI app built by :func:`feed.api.app.create_app`."""
