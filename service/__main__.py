"""``python -m service [--host H] [--port P] [--data-dir DIR] [--state-dir DIR]``."""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", help="bind address (CLUSTVIZ_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (CLUSTVIZ_PORT, default 8000)")
    parser.add_argument("--data-dir", help="datasets in clamp layout (CLUSTVIZ_DATA_DIR)")
    parser.add_argument("--state-dir", help="cache and job store (CLUSTVIZ_STATE_DIR)")
    parser.add_argument("--workers", type=int, help="worker processes (CLUSTVIZ_WORKERS)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="CLUSTVIZ_DEVICE")
    args = parser.parse_args()

    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    overrides = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key not in ("host", "port")
    }
    settings = Settings(**overrides)  # flags win over CLUSTVIZ_* variables
    host = args.host or settings.host
    port = args.port or settings.port
    os.environ.setdefault("MPLBACKEND", "Agg")
    print(f"clustviz: serving {settings.data_dir} on http://{host}:{port}", flush=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


if __name__ == "__main__":
    main()
