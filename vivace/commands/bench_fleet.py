"""`vivace bench fleet`: prefix affinity vs spreading across real servers, and a server lost mid-run.

The measuring is ``vivace.eval.fleet_bench.run_bench``. With ``--base-url``
(two or more) it measures the user's own servers and kills none; without, it
starts ``--servers`` vLLM servers of the configured local model on loopback
and, for the failover, kills one of them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace.errors import InputError
from vivace.eval import write_report

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("fleet", parents=parents.calls_model(),
                       help="prefix affinity vs spreading on real servers: cached tokens, latency, a killed server")
    p.add_argument("--servers", type=int, default=2, metavar="N",
                   help="local vLLM servers to start when no --base-url is given (default 2)")
    p.add_argument("--questions", metavar="FILE.jsonl", help='lines of {"id", "question"} (default: the bundled SoT set)')
    p.add_argument("--limit", type=int, default=8, metavar="N", help="questions to run (default 8; round-robin over categories)")
    p.add_argument("--max-points", type=int, default=None, help="SoT point cap (config sot_max_points)")
    p.add_argument("--failover-runs", type=int, default=4, metavar="N",
                   help="runs in flight when a server is killed (default 4; 0 skips the failover)")
    p.add_argument("--out", default="runs/bench-fleet", metavar="DIR", help="where report.json and the server logs go")
    p.set_defaults(handler=cmd_bench_fleet)


async def cmd_bench_fleet(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace.eval.fleet_bench import run_bench
    from vivace.eval.sot_bench import load_questions, select

    questions = select(load_questions(args.questions), None, args.limit)
    max_tokens = args.max_tokens if args.max_tokens is not None else 192
    max_points = args.max_points if args.max_points is not None else config.sot_max_points
    if max_tokens < 16 or max_points < 2 or args.failover_runs < 0:
        raise InputError("--max-tokens must be at least 16, --max-points at least 2, --failover-runs at least 0")
    own = bool(args.base_url)
    if own and len(config.base_urls) < 2:
        raise InputError("a fleet bench needs at least two --base-url")
    if not own and not 2 <= args.servers <= 8:
        raise InputError("--servers must be between 2 and 8")
    out = Path(args.out)
    err = Console(stderr=True)
    servers = None
    if own:
        urls = list(config.base_urls)
    else:
        servers = _local_servers(config, args.servers, out / "servers")
        with err.status(f"starting {args.servers} vLLM servers on 127.0.0.1 (logs in {servers.log_dir})..."):
            urls = await servers.start()

    async def connect(affinity: bool) -> Any:
        from vivace.runtime.openai_http import OpenAIBackend

        model = config.served_model_name or (None if own else "smollm2-135m")
        return await OpenAIBackend.connect(
            urls, model, api_key_env=config.api_key_env, timeout_s=config.request_timeout_s,
            retries=config.connect_retries, dialect=config.openai_dialect, prefix_affinity=affinity)

    def progress(row: dict[str, Any]) -> None:
        a, s = row["affinity"], row["spread"]
        err.print(f"  {row['id'][:16]:<16} affinity {a['latency_s']:5.2f} s {_pct(a['cached_share'])} cached "
                  f"| spread {s['latency_s']:5.2f} s {_pct(s['cached_share'])} cached | agree "
                  f"{_pct(row['answer_similarity']).strip()}", highlight=False)

    try:
        err.print(f"{len(questions)} questions x (affinity, spread) on {len(urls)} servers, max {max_tokens} tokens",
                  highlight=False)
        report = await run_bench(
            connect, urls, questions, max_tokens=max_tokens, max_points=max_points,
            repetition_penalty=config.repetition_penalty,
            kill=servers.kill if servers is not None and args.failover_runs else None,
            failover_runs=args.failover_runs, progress=progress)
    finally:
        if servers is not None:
            await servers.aclose()
    report["config"].update(started_locally=not own, model=config.model if not own else config.served_model_name)
    path = write_report(out, report)
    if args.json:
        emit_json({"report": str(path), "summary": report["summary"], "failover": report.get("failover")})
        return 0
    print_table(report)
    Console().print(f"report: {path}", highlight=False)
    return 0


def _local_servers(config: Config, n: int, log_dir: Path) -> Any:
    from vivace.runtime.local_server import LocalServers, ServerOptions
    from vivace.runtime.models import resolve

    model = resolve(config.model, config.home)
    if not Path(model).is_dir():
        raise InputError(f"local servers need a local model folder; {config.model!r} is not one (or pass --base-url)")
    options = ServerOptions(model, max_model_len=config.max_model_len or 2048, dtype=config.dtype,
                            kv_cache_space_gib=config.kv_cache_space_gib)
    return LocalServers(options, n, log_dir)


def _pct(v: float | None) -> str:
    return "   -" if v is None else f"{v * 100:3.0f}%"


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report["summary"]
    cfg = report["config"]
    table = Table(title=f"fleet bench: {len(report['servers'])} servers, SoT runs, greedy, max {cfg['max_tokens']} tokens")
    for col in ("routing", "runs", "median s", "prompt tok", "cached", "servers/run"):
        table.add_column(col, justify="left" if col == "routing" else "right")
    for arm in ("affinity", "spread"):
        a = s[arm]
        table.add_row(arm, str(a["runs"]), f"{a['latency_median_s']:.2f}" if a["latency_median_s"] else "-",
                      str(a["prompt_tokens"]), _pct(a["cached_share"]), str(a["servers_used_median"]))
    console = Console()
    console.print(table)
    speedup = s["speedup_affinity_median"]
    console.print(f"affinity vs spread: x{speedup:.2f} median latency ratio; answers agree "
                  f"{_pct(s['answer_similarity_median']).strip()} (median word-level similarity), identical in "
                  f"{_pct(s['same_answer_share']).strip()} of questions"
                  f"{'' if report['cache_reset_per_run'] else ' (prefix caches could not be reset between runs)'}"
                  if speedup else "no runs", highlight=False)
    f = report.get("failover")
    if f:
        console.print(f"failover: killed {f['killed'] or 'nothing (runs ended first)'} with {f['in_flight_on_killed']} "
                      f"calls in flight; {f['runs_ok']}/{f['runs']} runs finished, {f['unfinished_calls']} calls "
                      f"unfinished, {f['resumed_answers']} answers resumed elsewhere, in {f['wall_s']:.1f} s "
                  f"({f['unfailed_wall_s']:.1f} s with no failure); answers agree "
                  f"{_pct(f['answer_similarity_to_unfailed_median']).strip()} with the same batch unfailed",
                      highlight=False)
