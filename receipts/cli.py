"""The `receipts` command. Each subcommand is a thin call into one library function; expected errors
become one line (`Error: …`) and exit status 1."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from . import render


class UserError(Exception):
    """An expected failure, shown as one line without a traceback."""


def _data_dir(args) -> str:
    return args.data or os.environ.get("RECEIPTS_DATA") or "./data"


def _existing_data_dir(args, hint: str = "start `receipts proxy` first, or pass --data DIR") -> str:
    data = _data_dir(args)
    if not os.path.isdir(data):
        raise UserError(f"no data directory at {data}: {hint}")
    return data


def _since(args) -> datetime | None:
    """--since as a naive UTC time (30m, 2h, 7d or an ISO date/time), else None."""
    from receipts.storage import queries

    try:
        return queries.parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _source(args):
    """What a reader reads: the lake (--lake, or $RECEIPTS_LAKE unless --data is given), else the data
    directory, which must exist."""
    from receipts.storage import db

    lake = getattr(args, "lake", None) or (None if args.data else os.environ.get("RECEIPTS_LAKE"))
    if lake:
        return db.Lake(lake)
    return _existing_data_dir(args)


def _connect(args, views: bool | str = True):
    from receipts.storage import db, fold

    source = _source(args)
    if isinstance(source, db.Lake):
        return db.connect(source, views=views)
    fold.catch_up(source, lambda m: print(f"receipts: {m}", file=sys.stderr, flush=True))
    # a snapshot of the tables: no journal file can be opened afterwards
    return db.connect(source, views=views, journal=False)


# ---- subcommands ---------------------------------------------------------------------------------
def cmd_proxy(args) -> int:
    from receipts.storage import config as cfg

    from . import proxy

    overrides = {o.setting: getattr(args, o.setting) for o in cfg.OPTIONS if o.flag} | {"data_dir": args.data}
    settings = cfg.with_extras(cfg.load(args.config, overrides), args.rule, args.ai_path)
    config = args.config or (str(cfg.DEFAULT_CONFIG) if cfg.DEFAULT_CONFIG.exists() else None)
    return proxy.run(settings, config, reverse=proxy.reverse_upstream(args.reverse) if args.reverse else None)


def cmd_env(args) -> int:
    from receipts.storage import config as cfg

    from . import env

    settings = cfg.load(
        args.config, {"data_dir": _data_dir(args), "ca_dir": args.ca_dir, "listen_port": args.listen_port}
    )
    try:
        bundle = env.trust_bundle(settings)
    except FileNotFoundError:
        raise UserError(
            f"there is no proxy CA in {settings.ca_path} yet: start the proxy once (scripts/proxy), it makes it"
        ) from None
    sys.stdout.write(env.shell_lines(env.variables(settings, bundle), args.shell))
    return 0


def cmd_sql(args) -> int:
    import duckdb

    from receipts.storage import db, queries

    con = _connect(args, views=db.AT_LEAST_RECEIPTS if db.reads_receipts_alone(args.query) else True)
    try:
        statement = db.check_read_only(con, args.query)
        cols, rows = queries.rows(con, statement)
    except db.QueryRejected as exc:
        raise UserError(str(exc)) from None
    except duckdb.Error as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    if args.json:
        print(render.to_json([render.jsonable(dict(zip(cols, r))) for r in rows]))
    elif args.csv:
        sys.stdout.write(render.to_csv(cols, rows))
    else:
        print(render.table(cols, rows))
    return 0


def cmd_show(args) -> int:
    from receipts.storage import db, queries

    con = _connect(args, views=db.KEPT_RECEIPTS)
    out = queries.found(con, args.id)  # (kept rows, or computed from the tables alone)
    if not out:  # the beginning of an id, as `list` shortens them
        starting = queries.by_prefix(con, args.id)
        if len(starting) > 1:
            listed = starting[: queries.PREFIX_LISTED]
            raise UserError(
                f"{render.safe(args.id)!s} is the beginning of ids of {len(starting)}"
                f"{'+' if len(starting) > len(listed) else ''} receipts: {', '.join(listed)}; "
                f"give more of it"
            )
        out = queries.computed(con, starting)
    if not out:
        short = len(args.id.strip().removesuffix("…")) < queries.PREFIX_AT_LEAST
        raise UserError(
            f"no receipt matches {render.safe(args.id)!s}"
            + (f" (the beginning of an id needs {queries.PREFIX_AT_LEAST} characters)" if short else "")
        )
    if args.json:
        items = [render.receipt_document(r, d) for r, d in out]
        print(render.to_json(items[0] if len(items) == 1 else items))
    else:
        print("\n\n".join(render.receipt_text(r, d) for r, d in out))
    return 0


def cmd_list(args) -> int:
    from receipts.storage import db, queries

    con = _connect(args, views=db.AT_LEAST_RECEIPTS)  # (list_receipts reads `receipts` alone)
    items = queries.list_receipts(con, args.status, _since(args), args.limit)
    if args.json:
        print(render.to_json([render.jsonable(x) for x in items]))
    else:
        print(
            render.table(
                [label for label, _ in LIST_TEXT], [tuple(show(x) for _, show in LIST_TEXT) for x in items], width=24
            )
        )
    return 0


# `receipts list`'s columns as text: (label, what is shown of a row); --json gives the rows whole
LIST_TEXT = (
    ("receipt", lambda r: r["receipt_id"]),
    ("first seen (UTC)", lambda r: r["first_seen"].strftime("%Y-%m-%d %H:%M:%S") if r["first_seen"] else None),
    ("endpoint", lambda r: f"{r['host']}{r['path']}"),
    ("model", lambda r: r["model"]),
    ("status", lambda r: r["status"]),
    ("proof", lambda r: r["resolution"] or r["proof_status"]),
    ("tokens", lambda r: r["total_tokens"]),
    ("latency", lambda r: f"{r['latency_ms']:.0f} ms" if r["latency_ms"] is not None else None),
    ("cost", lambda r: render.cost_text(r, short=True)),
    ("source", lambda r: r["cost_source"]),
    ("payer", lambda r: r["payer"]),
    ("tx", lambda r: r["payment_hash"]),
)


# `receipts tail`'s columns: (label, the calls view's column, width)
TAIL_COLUMNS = (
    ("started (UTC)", "started_at", 23),
    ("receipt", "receipt_id", 36),
    ("method", "method", 6),
    ("host", "host", 24),
    ("path", "path", 26),
    ("status", "status", 6),
    ("model", "model", 18),
    ("tokens", "total_tokens", 7),
    ("paid", "paid", 5),
    ("error", "error", 40),
)
TAIL_LOOKBACK = timedelta(seconds=120)  # a call is printed when it is seen, even if it started this much earlier


def _tail_line(values) -> str:
    return "  ".join(
        render.safe(v, w).ljust(w) if i < len(TAIL_COLUMNS) - 1 else render.safe(v, w)
        for i, (v, (_, _, w)) in enumerate(zip(values, TAIL_COLUMNS))
    ).rstrip()


def cmd_tail(args) -> int:
    from receipts.storage import db, queries

    data = _existing_data_dir(args)
    since = _since(args) or datetime.now(UTC).replace(tzinfo=None)
    deadline = (time.monotonic() + args.seconds) if args.seconds else None
    print(
        f"receipts: calls from {render.safe(since)} UTC on, as they are recorded (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    print(_tail_line([label for label, _, _ in TAIL_COLUMNS]), flush=True)
    printed: dict[str, datetime] = {}  # the calls printed, by receipt id (those older than the lookback go)
    newest = since
    try:
        while deadline is None or time.monotonic() < deadline:
            with db.connect(data, views=False) as con:  # (a call sealed late, by another writer: the lookback)
                con.execute(db.views_sql_for(queries.NEW_CALLS))
                calls = queries.new_calls(con, max(since, newest - TAIL_LOOKBACK))
            for c in calls:
                if c["receipt_id"] not in printed and c["started_at"] >= since:
                    printed[c["receipt_id"]] = c["started_at"]
                    newest = max(newest, c["started_at"])
                    print(_tail_line([c[col] for _, col, _ in TAIL_COLUMNS]), flush=True)
            printed = {rid: at for rid, at in printed.items() if at >= newest - TAIL_LOOKBACK}
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_ingest(args) -> int:
    from receipts.addon import ingest
    from receipts.storage import config as cfg
    from receipts.storage.private import secure_data_dir

    settings = cfg.load(args.config, {"data_dir": args.data})
    try:
        secure_data_dir(settings.data_dir)
        summary = ingest.ingest_file(args.file, settings)
    except ingest.IngestError as exc:
        raise UserError(str(exc)) from None
    print(
        f"receipts: recorded {summary['calls']} new calls ({summary['already']} already recorded, "
        f"{summary['skipped']} exchanges were not AI calls) "
        f"from {render.safe(args.file)}"
    )
    return 0


# jemalloc, DuckDB's allocator on Linux, keeps the pages a query freed for seconds before it gives them
# back. A pass frees each part's working memory before it queries the next: given back after 100 ms, its
# peak does not follow the number of receipts, for 5-15 % more time (docs/benchmarks.md). DuckDB reads
# this when it loads; a value of the user's own is kept.
VERIFIER_ALLOCATOR = "dirty_decay_ms:100,muzzy_decay_ms:0"


def cmd_verify(args) -> int:
    if "duckdb" not in sys.modules:
        os.environ.setdefault("DUCKDB_JE_MALLOC_CONF", VERIFIER_ALLOCATOR)
    from receipts.storage import config as cfg
    from receipts.storage.private import secure_data_dir
    from receipts.verifier import lock

    data = _data_dir(args)
    lake = getattr(args, "lake", None) or (os.environ.get("RECEIPTS_LAKE") if args.shard else None)
    shard = _shard(args.shard) if args.shard else None
    if shard and not lake:
        raise UserError('--shard verifies a share of a lake: give --lake too (README, "A fleet")')
    if lake:  # the verifier's own data directory: its checks are written there, then shipped
        os.makedirs(data, mode=0o700, exist_ok=True)
    elif not os.path.isdir(data):
        raise UserError(f"no data directory at {data}: nothing has been recorded yet")
    settings = cfg.load(args.config, {"data_dir": data})
    secure_data_dir(data)
    try:
        with lock.exclusive(data):
            if lake:
                return _verify_lake(args, data, settings, lake, shard)
            return _verify_passes(args, data, settings)
    except lock.VerifierBusy as exc:
        raise UserError(str(exc)) from None


def _shard(text: str) -> tuple[int, int]:
    k, _, total = text.partition("/")
    if not (k.isdigit() and total.isdigit() and 1 <= int(k) <= int(total)):
        raise UserError(f"--shard takes k/K with 1 <= k <= K (e.g. 1/2), not {render.safe(text)!r}")
    return int(k), int(total)


def _report_pass(s) -> None:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(s.statuses.items())) or "nothing to verify"
    print(
        f"receipts verify: {s.seen} receipts checked ({counts}); {s.changed} changed"
        + (f"; {s.skipped} left as they were (node fault)" if s.skipped else "")
        + "".join(f"\n  fault: {render.safe(f)}" for f in s.faults),
        flush=True,
    )


def _verify_passes(args, data: str, settings) -> int:
    from receipts.storage.journal import Journal
    from receipts.verifier.verify import verify_once

    deadline = time.monotonic() + args.seconds if args.seconds else None
    # One pass (--once) leaves its events to the recorder's fold, or to the next reader: its memory is the
    # pass's, whatever the number of receipts. A verifier that follows folds as every writer does.
    with Journal(data, "verifier", durability=settings.durability, seal_interval=0.2, fold=args.follow) as journal:
        while True:
            s = verify_once(data, settings, journal)
            _report_pass(s)
            if not args.follow or (deadline and time.monotonic() > deadline):
                return 1 if s.faults and not args.follow else 0
            time.sleep(args.interval)


def _verify_lake(args, data: str, settings, url: str, shard) -> int:
    """Passes over the lake: each reads the lake, writes its checks to this data directory's journal, and
    ships them before the next pass reads (one that could not ship first does not decide again)."""
    import duckdb

    from receipts.storage import db, lake
    from receipts.storage.journal import Journal
    from receipts.verifier.verify import verify_once

    deadline = time.monotonic() + args.seconds if args.seconds else None
    with lake.ship_lock(data):
        owner = lake.local_owner(data, args.name)
        con = lake.open_lake(url, read_only=False)
        try:
            lake.check_tables(con)
            lake.claim(con, owner, data)
            while True:
                lake.ship_once(con, data, owner)  # (what an interrupted pass left, first)
                with Journal(
                    data, "verifier", durability=settings.durability, seal_interval=0.2, fold=args.follow
                ) as journal:
                    s = verify_once(db.Lake(url), settings, journal, shard=shard)
                got = lake.ship_once(con, data, owner)
                _report_pass(s)
                print(
                    f"receipts verify: shipped {got.events:,} events to the lake as {owner.name!r}"
                    + (f" (shard {shard[0]}/{shard[1]})" if shard else ""),
                    flush=True,
                )
                if not args.follow or (deadline and time.monotonic() > deadline):
                    return 1 if s.faults and not args.follow else 0
                time.sleep(args.interval)
        except (duckdb.Error, OSError) as e:  # (its checks are in its journal: the next run ships them first)
            raise UserError(
                f"the lake failed during a pass: {str(e).strip().splitlines()[0]}; the checks made are kept "
                f"in {data} and shipped by the next run"
            ) from None
        finally:
            con.close()


def cmd_doctor(args) -> int:
    from . import doctor

    problems = doctor.run(args.config, _data_dir(args), args.proxy)
    return 1 if problems else 0


def cmd_audit(args) -> int:

    from . import audit

    text, rep = audit.run(_source(args), args.format, _since(args), args.app, args.limit, args.since)
    if args.app and not rep["summary"]["calls"] and args.app not in rep["known_apps"]:
        known = ", ".join(render.safe(a, 80) for a in rep["known_apps"][:20]) or "none recorded"
        raise UserError(f"no calls from app {render.safe(args.app)!r}; apps: {known}")
    if args.out and args.out != "-":
        write_private(args.out, text)
        found = sum(audit.problem_counts(rep).values())
        print(
            f"receipts audit: {rep['summary']['receipts']} receipts, {found} problem rows; wrote {render.safe(args.out)}",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return 0


def cmd_export(args) -> int:
    from receipts.storage import export

    data, since = _source(args), _since(args)
    try:
        done = export.export(data, args.format, args.out, since, args.view)
    except (ValueError, OSError) as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    if args.out and args.out != "-":
        print(
            f"receipts export: {done['rows']} {done['view']} rows as {done['format']} to {render.safe(args.out)}",
            file=sys.stderr,
        )
    return 0


def _lake_url(args) -> str:
    url = args.lake or os.environ.get("RECEIPTS_LAKE")
    if not url:
        raise UserError(
            "no lake given: pass --lake 'postgres:dbname=… host=…' or set RECEIPTS_LAKE (README, \"A fleet\")"
        )
    return url


def _say(msg: str) -> None:
    print(f"receipts: {msg}", file=sys.stderr, flush=True)


def cmd_ship(args) -> int:
    from receipts.storage import lake

    data = _existing_data_dir(args, "ship the one `receipts proxy` writes, with --data DIR")
    if args.tries < 1:
        raise UserError(f"--tries must be at least 1, not {args.tries}")
    return lake.run_shipper(
        data,
        _lake_url(args),
        name=args.name,
        once=args.once,
        interval=args.interval,
        seconds=args.seconds,
        tries=args.tries,
        say=_say,
    )


def cmd_lake(args) -> int:
    from receipts.storage import lake

    url = _lake_url(args)
    if args.action == "init":
        if not args.data_path:
            raise UserError("lake init needs --data-path: where the Parquet files go (s3://bucket/prefix/)")
        made = lake.init(url, args.data_path)
        _say(f"lake ready at {url}: " + (f"made {', '.join(made)}" if made else "every table was already there"))
    elif args.action == "publish":
        from receipts.storage import iceberg

        iceberg.publish(url, args.iceberg_path, say=_say)
    else:
        lake.maintain(url, args.older_than, say=_say)
    return 0


def cmd_completion(args) -> int:
    from . import completion

    print(completion.script(parser(), args.shell), end="")
    return 0


def cmd_serve(args) -> int:
    import ipaddress

    from receipts.storage import config as cfg

    from .web import server

    data = _source(args)
    try:
        if args.host != "localhost":
            ipaddress.ip_address(args.host)
    except ValueError:
        raise UserError(f"--host must be an IP address such as 127.0.0.1, not {render.safe(args.host)!r}") from None
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be a number from 0 to 65535, not {args.port}")
    for name in args.allow_host or ():
        if not server.ALLOW_HOST.match(name.lower()):
            raise UserError(
                f"--allow-host takes a host name or an address, with :PORT or not, not {render.safe(name)!r}"
            )
    token = args.token or os.environ.get("RECEIPTS_SERVE_TOKEN") or None
    if token is not None and not server.TOKEN.match(token):
        raise UserError(
            "the token must be 16 to 200 letters, digits or -._~ (python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))' makes one)"
        )
    settings = cfg.load(args.config, {"data_dir": _data_dir(args)})
    try:
        return server.run(data, args.host, args.port, args.cache, settings, args.refresh, args.allow_host or (), token)
    except (OSError, RuntimeError) as exc:
        raise UserError(str(exc).splitlines()[0]) from None


def write_private(path: str, text: str) -> None:
    """Write a report the user only can read (0600), also over a file an older version left readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # not /dev/stdout or a pipe
            os.fchmod(fd, 0o600)
        f.write(text)


# ---- argument parsing ----------------------------------------------------------------------------
def _bool_flag(p, name: str, dest: str, help_: str) -> None:
    p.add_argument(f"--{name}", dest=dest, action="store_const", const=True, default=None, help=help_)
    p.add_argument(f"--no-{name}", dest=dest, action="store_const", const=False, help=argparse.SUPPRESS)


# what `list --status` takes: a proof status (storage/views.sql `receipts.proof_status`) or a resolution
STATUSES = ("unpaid", "pending", "passed", "failed", "off_chain", "retried", "refunded", "risky")


class _Version(argparse.Action):
    """--version: the installed package's version (looked up only when asked: importlib.metadata is slow)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"receipts {version('receipts-proxy')}")
        except PackageNotFoundError:
            print("receipts (not installed: run from a checkout without scripts/bootstrap)")
        parser.exit()


EXAMPLES = {  # each subcommand's help ends with one
    "proxy": 'receipts proxy --bodies hash   # then, in the app\'s shell: eval "$(receipts env)"',
    "env": 'eval "$(receipts env)"; python my_app.py',
    "sql": "receipts sql \"SELECT payer, sum(amount) FROM receipts WHERE proof_status = 'passed' GROUP BY ALL\"",
    "show": "receipts show req_8f2c… --json",
    "list": "receipts list --status failed --since 7d",
    "tail": "receipts tail --since 30m",
    "ingest": "receipts ingest session.har",
    "verify": "receipts verify --follow",
    "doctor": "receipts doctor",
    "audit": "receipts audit --since 7d --format html --out audit.html",
    "export": "receipts export --format csv --since 2026-12-01 --out receipts.csv",
    "ship": "RECEIPTS_LAKE='postgres:dbname=lake host=db' receipts ship --name host-a",
    "lake": "receipts lake init --lake 'postgres:dbname=lake host=db' --data-path s3://bucket/receipts/",
    "completion": 'eval "$(receipts completion bash)"',
    "serve": "receipts serve --port 8000",
}


def _command(sub, name: str, *, help: str, parents=()) -> argparse.ArgumentParser:
    """A subcommand whose help says what it does and ends with an example."""
    return sub.add_parser(
        name,
        parents=list(parents),
        help=help,
        description=help[:1].upper() + help[1:] + ".",
        epilog=f"example:\n  {EXAMPLES[name]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _since_flag(p: argparse.ArgumentParser, what: str = "only what was recorded since then") -> None:
    p.add_argument("--since", help=f"{what}: 30m, 2h, 7d, or an ISO date/time (UTC)")


def parser() -> argparse.ArgumentParser:
    from receipts.storage import config as cfg

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", help=next(o.help for o in cfg.OPTIONS if o.setting == "data_dir"))
    lake = argparse.ArgumentParser(add_help=False)
    lake.add_argument(
        "--lake",
        metavar="CATALOG",
        help="read a lake instead of a data directory: "
        "'postgres:dbname=… host=…' (default: $RECEIPTS_LAKE unless --data is given)",
    )
    top = argparse.ArgumentParser(prog="receipts", description="Receipts for paid AI calls.")
    top.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub = top.add_subparsers(dest="command", required=True)

    p = _command(sub, "proxy", parents=[common], help="run the recording proxy")
    p.add_argument("--config", help="settings file (default: mitm_config.yaml of this project)")
    for o in cfg.OPTIONS:  # (storage/config.py: each setting declared once, with its check and mitmproxy option)
        if o.boolean and o.flag:
            _bool_flag(p, o.flag.removeprefix("--"), o.setting, o.help_text())
        elif o.flag:
            metavar = None if o.choices else o.flag[2:].replace("-", "_").upper()
            p.add_argument(o.flag, dest=o.setting, metavar=metavar, choices=o.choices, help=o.help_text())
    p.add_argument("--ai-path", action="append", help="another AI path suffix to record (repeatable)")
    p.add_argument("--rule", action="append", help="also record HOSTGLOB/PATHGLOB (repeatable)")
    p.add_argument(
        "--reverse",
        metavar="URL",
        help="reverse-proxy mode: clients call the proxy as if it were URL "
        "(for clients that ignore HTTPS_PROXY or pin certificates)",
    )
    p.set_defaults(func=cmd_proxy)

    p = _command(
        sub,
        "env",
        parents=[common],
        help='print the variables that send a shell\'s apps through the proxy: eval "$(receipts env)"',
    )
    p.add_argument("--config", help="settings file (the proxy's port; default: mitm_config.yaml)")
    p.add_argument("--ca-dir", help="where the proxy's CA lives (default: DATA/ca)")
    p.add_argument("--listen-port", help="the proxy's port, if not the configured one")
    p.add_argument("--shell", choices=("sh", "fish"), default="sh", help="sh (bash, zsh: the default) or fish")
    p.set_defaults(func=cmd_env)

    p = _command(sub, "sql", parents=[common, lake], help="run read-only SQL over the views")
    p.add_argument("query")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    p.set_defaults(func=cmd_sql)

    p = _command(sub, "show", parents=[common, lake], help="show the receipt that any id finds")
    p.add_argument("id", help="receipt id, request id, provider id, tx hash, session id, nonce or payer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show, ends_at_once=True)

    p = _command(sub, "list", parents=[common, lake], help="list receipts, newest first")
    p.add_argument("--status", choices=STATUSES, metavar="STATUS", help=" | ".join(STATUSES))
    _since_flag(p)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list, ends_at_once=True)

    p = _command(sub, "tail", parents=[common], help="print calls as they are recorded, from now on")
    _since_flag(p, "print the calls since then first")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between looks (default 1)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=cmd_tail)

    p = _command(sub, "ingest", parents=[common], help="record calls from a HAR or mitmproxy flow file")
    p.add_argument("file")
    p.add_argument("--config")
    p.set_defaults(func=cmd_ingest)

    p = _command(sub, "verify", parents=[common], help="check paid receipts against the chain")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit (default)")
    mode.add_argument("--follow", action="store_true", help="keep verifying new and pending receipts")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between passes with --follow")
    p.add_argument("--seconds", type=float, default=None, help="with --follow: stop after this many seconds")
    p.add_argument("--config")
    p.add_argument(
        "--lake",
        metavar="CATALOG",
        help="verify the receipts of a lake; the checks are written to --data and shipped to the lake",
    )
    p.add_argument(
        "--shard",
        metavar="k/K",
        help="with --lake: only shard k of K (by network and payer); run one verifier per shard, on any hosts",
    )
    p.add_argument("--name", help="with --lake: this verifier's name in the lake (as `receipts ship --name`)")
    p.set_defaults(func=cmd_verify, ends_at_once=True)

    p = _command(sub, "doctor", parents=[common], help="explain what is wrong, in plain words")
    p.add_argument("--config")
    p.add_argument("--proxy", help="proxy address to check (default: from the config)")
    p.set_defaults(func=cmd_doctor)

    p = _command(sub, "audit", parents=[common, lake], help="a report of what apps paid for and what looks wrong")
    p.add_argument("--app", help="only this app (an app name as the report lists them)")
    _since_flag(p)
    p.add_argument("--format", choices=("md", "html", "json"), default="md")
    p.add_argument("--out", help="write the report to this file (default: standard output)")
    p.add_argument(
        "--limit", type=int, default=1000, help="rows shown per problem section (0: all; counts are always complete)"
    )
    p.set_defaults(func=cmd_audit, ends_at_once=True)

    p = _command(
        sub,
        "export",
        parents=[common, lake],
        help="export receipts (or another view) as Parquet, CSV, JSON lines or HAR",
    )
    p.add_argument("--format", choices=("parquet", "csv", "jsonl", "har"), required=True)
    _since_flag(p)
    p.add_argument("--out", help="file to write (default: standard output; Parquet needs a file)")
    p.add_argument(
        "--view",
        default="receipts",
        help="receipts (default), calls, payments, settlements, challenges, "
        "checks or sessions (HAR is always built from the calls)",
    )
    p.set_defaults(func=cmd_export)

    p = _command(sub, "ship", parents=[common], help="copy this data directory's tables into a lake, exactly once")
    p.add_argument("--lake", metavar="CATALOG", help="the lake: 'postgres:dbname=… host=…' (default: $RECEIPTS_LAKE)")
    p.add_argument(
        "--name",
        help="this data directory's name in the lake, unique across the fleet "
        "(default: the host name and a hash of the directory's path)",
    )
    p.add_argument("--once", action="store_true", help="ship what there is, then exit")
    p.add_argument(
        "--tries",
        type=int,
        default=5,
        help="with --once: failed tries (1 s, 2 s, 4 s … apart) before giving up (default 5)",
    )
    p.add_argument("--interval", type=float, default=5.0, help="seconds between shipments (default 5)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=cmd_ship)

    p = _command(sub, "lake", help="make a lake, maintain one, or publish an Iceberg copy of it")
    p.add_argument("action", choices=("init", "maintain", "publish"))
    p.add_argument("--lake", metavar="CATALOG", help="the lake: 'postgres:dbname=… host=…' (default: $RECEIPTS_LAKE)")
    p.add_argument("--data-path", help="with init: where its Parquet files go (s3://bucket/prefix/)")
    p.add_argument(
        "--older-than",
        type=float,
        default=3600.0,
        help="with maintain: seconds a snapshot or an orphaned file is kept (default 3600)",
    )
    p.add_argument(
        "--iceberg-path",
        help="with publish: where the Iceberg copy's files go (s3://bucket/prefix/, on the lake's store)",
    )
    p.set_defaults(func=cmd_lake)

    p = _command(sub, "completion", help='print a shell completion script: eval "$(receipts completion bash)"')
    p.add_argument("shell", choices=("bash", "zsh", "fish"))
    p.set_defaults(func=cmd_completion)

    p = _command(sub, "serve", parents=[common, lake], help="a local web page over the receipts (read-only)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--config", help="settings file (explorer links per network; default: mitm_config.yaml)")
    p.add_argument("--cache", help=argparse.SUPPRESS)  # (ignored, with a note: nothing is cached on disk any more)
    p.add_argument(
        "--refresh",
        type=float,
        default=1.0,
        help="seconds between checks for new data (default 1; a new snapshot is read when there is)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        metavar="NAME[:PORT]",
        help="another name the page may be opened at (a Host header to answer; repeatable)",
    )
    p.add_argument(
        "--token",
        help="the token other machines must give (default: $RECEIPTS_SERVE_TOKEN, else one is "
        "made and printed when --host is not a loopback address; the variable keeps it "
        "out of the process list)",
    )
    p.set_defaults(func=cmd_serve)
    return top


def _end_now(status: int) -> NoReturn:
    """End the process of a command whose work is done and durable when it returns (`show`, `list`,
    `audit`, `verify`) once its output is out, without tearing Python, web3 and DuckDB down (about 35 ms
    of `receipts show`'s 0.35 s, 50–70 ms of an audit's, 100–180 ms of a verifier's): their connections
    have nothing left to write, a report file is closed, the verifier's journal is closed and its events
    synced, and what `catch_up` folded before a read is synced."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    from receipts.storage.private import private_umask

    private_umask()  # every file this command writes is the user's only (0600 files, 0700 directories)
    args = parser().parse_args(argv)
    try:
        status = args.func(args)
        if argv is None and getattr(args, "ends_at_once", False):
            _end_now(status)
        return status
    except BrokenPipeError:  # (the reader went away: `receipts show … | head`)
        sys.stderr.close()
        return 0
    except Exception as exc:
        cfg = sys.modules.get("receipts.storage.config")  # (imported by the commands that read the configuration)
        lake = sys.modules.get("receipts.storage.lake")  # (imported by the commands that use a lake)
        if (
            not isinstance(exc, UserError)
            and not (cfg and isinstance(exc, cfg.ConfigError))
            and not (lake and isinstance(exc, lake.LakeError))
        ):
            raise
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
