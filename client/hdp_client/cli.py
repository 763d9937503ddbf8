"""``hdp-client``: the client on the command line. Prints the answer, or one line on standard
error and exits non-zero (1: refused or unreachable, 2: usage); never a traceback.

    hdp-client --url http://127.0.0.1:8000 releases
    hdp-client describe rel-00001
    hdp-client query -r rel-00001 --format csv "SELECT sex, count(*) FROM register_visit GROUP BY sex"

The token comes from ``$HDP_TOKEN`` (or ``--token``), the URL from ``$HDP_URL`` (or ``--url``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hdp_client.client import Client
from hdp_client.errors import ClientError, one_line

DEFAULT_URL = "http://127.0.0.1:8000"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hdp-client", description="Query your releases on the access layer.")
    p.add_argument("--url", default=os.environ.get("HDP_URL", DEFAULT_URL), help="access layer (or $HDP_URL)")
    p.add_argument("--token", default=os.environ.get("HDP_TOKEN"), help="API token (or $HDP_TOKEN)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("releases", help="your releases")
    for name, what in (("schema", "tables and columns"), ("describe", "codebook"), ("manifest", "manifest")):
        sp = sub.add_parser(name, help=f"a release's {what} (JSON)")
        sp.add_argument("release")
    q = sub.add_parser("query", help="run SQL on a release")
    q.add_argument("--release", "-r", required=True)
    q.add_argument("--format", choices=["csv", "json", "arrow", "parquet"], default="csv")
    q.add_argument("--output", "-o", type=Path, help="write to a file")
    q.add_argument("sql")
    return p


def run(args: argparse.Namespace) -> int:
    if not args.token:
        print("error: no token: set $HDP_TOKEN or pass --token", file=sys.stderr)
        return 2
    with Client(args.url, args.token, timeout_s=args.timeout) as c:
        if args.command == "query":
            if args.format in ("arrow", "parquet") and not args.output:
                print("error: binary formats need --output", file=sys.stderr)
                return 2
            body = c.raw(args.sql, release=args.release, format=args.format).content
            if args.output:
                args.output.write_bytes(body)
                print(f"wrote {len(body)} bytes to {args.output}", file=sys.stderr)
            else:
                sys.stdout.write(body.decode())
            return 0
        doc: Any
        if args.command == "releases":
            doc = c.releases()
        elif args.command == "schema":
            doc = c.schema(args.release)
        elif args.command == "describe":
            doc = c.describe(args.release)
        else:
            doc = c.manifest(args.release)
        json.dump(doc, sys.stdout, indent=1, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except ClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # writing --output
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
