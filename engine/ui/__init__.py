"""``artledger ui``: a read-only web dashboard over a store.

Needs the ``ui`` extra (Starlette, Jinja2, uvicorn); importing ``engine``
never imports it. :func:`engine.ui.app.create_app` builds the application.
"""
