"""``artledger ui``: serve the read-only web dashboard for a store.

Registered by :func:`add_parser`; Starlette and uvicorn (the ``ui`` extra) are
imported only when the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from engine.errors import StoreError

EXIT_OK, EXIT_PROBLEM = 0, 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``ui`` subcommand to the ``artledger`` parser's subparsers."""
    help_ = "serve the read-only web dashboard (runs, DAGs, artifacts, lineage, history)"
    sp: argparse.ArgumentParser = subparsers.add_parser("ui", help=help_, description=help_)
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    sp.add_argument("--open", action="store_true", help="open the dashboard in a browser")
    sp.set_defaults(func=cmd_ui)
    return sp


def _store_path(args: argparse.Namespace) -> Path:
    from engine.store import default_path

    return Path(args.store) if args.store else default_path()


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve until interrupted (Ctrl-C)."""
    path = _store_path(args)
    if not (path / "ledger").is_dir():
        raise StoreError(
            f"no store at {path}: nothing to show; pass --store PATH (or set ARTLEDGER_STORE) "
            "to a store, or create one with `artledger demo`"
        )
    try:
        import uvicorn

        from engine.ui.app import create_app
    except ImportError as e:
        raise StoreError(
            f'the dashboard needs the `ui` extra ({e.name} is missing): pip install "artledger[ui]"'
        ) from None
    from engine.store import Store

    with Store.open(path, readonly=True) as store:
        app = create_app(store)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
        server = uvicorn.Server(config)
        if args.open:
            _open_when_up(server, args.host)
        sys.stderr.write(
            f"artledger ui: serving {path} on http://{args.host}:{args.port}/ (Ctrl-C stops)\n"
        )
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is meant to stop
            server.run()
    sys.stderr.write("artledger ui: stopped\n")
    return EXIT_OK


def _open_when_up(server: Any, host: str) -> None:
    import threading
    import time
    import webbrowser

    def wait() -> None:
        for _ in range(200):
            if server.started:
                port = server.servers[0].sockets[0].getsockname()[1]
                webbrowser.open(f"http://{host}:{port}/")
                return
            time.sleep(0.05)

    threading.Thread(target=wait, daemon=True).start()
